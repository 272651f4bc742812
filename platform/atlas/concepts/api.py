"""Concept search and detectors: POST /api/concept/search (public; answered at once when small, else a job to poll
at GET /api/concept/search/<id>), POST /api/detector/new (x-api-key), GET /api/detector/<id>, POST /api/detect."""

from django.http import HttpRequest
from django.urls import reverse
from ninja import Router

from atlas.accounts.auth import ApiKeyAuth, ApiKeyRequest
from atlas.concepts.models import ConceptSearch, Detector
from atlas.concepts.schemas import (
    ConceptSearchIn,
    ConceptSearchOut,
    DetectIn,
    DetectionOut,
    DetectorNewIn,
    DetectorOut,
    DetectOut,
)
from atlas.concepts.selectors import concept_search_get, detector_get, search_results_shown, search_saes
from atlas.concepts.services import concept_search_create, concept_search_plan, detect_texts, detector_create
from atlas.jsonapi import Identifier, error_responses
from atlas.lms.selectors import tokens_text, vocabulary_for
from atlas.ratelimit import LIVE_RATE

router = Router(tags=["concepts"], by_alias=True)
# Work a worker does while the request waits: 502 when it fails, 503 when none answers in time; 429 over the rate.
WORKER_ERRORS = error_responses(400, 429, 502, 503)


def search_out(request: HttpRequest, search: ConceptSearch) -> ConceptSearchOut:
    return ConceptSearchOut(
        id=search.pk, status=search.status, url=request.build_absolute_uri(reverse("concept-search", args=[search.pk])),
        model_id=search.language_model.slug, sources=[sae.slug for sae in search_saes(search)], pooling=search.pooling,
        n_positive=len(search.positives), n_negative=len(search.negatives) + search.dataset_negatives,
        progress={"done": search.progress_done, "total": search.progress_total}, error=search.error or None,
        results=search_results_shown(search))


def detector_out(request: HttpRequest, detector: Detector) -> DetectorOut:
    return DetectorOut(
        id=detector.pk, name=detector.name, url=request.build_absolute_uri(reverse("detector", args=[detector.pk])),
        model_id=detector.sae.language_model.slug, source=detector.sae.slug, kind=detector.kind,
        pooling=detector.pooling, features=detector.features, weights=detector.weights, bias=detector.bias,
        threshold=detector.threshold, evaluation=detector.evaluation)


@router.post("/concept/search", url_name="api-concept-search", response={200: ConceptSearchOut, **WORKER_ERRORS})
def concept_search(request: HttpRequest, body: ConceptSearchIn) -> ConceptSearchOut:
    """Rank every feature of each SAE by how its pooled activation separates the positive texts from the negative
    ones, and fit probes beside them. Small requests are answered done; larger ones answer queued: poll the id."""
    plan = concept_search_plan(body)
    LIVE_RATE.check(request)
    creator = request.user if request.user.is_authenticated else None
    return search_out(request, concept_search_create(plan=plan, creator=creator))


@router.get("/concept/search/{search_id}", url_name="api-concept-search-get",
            response={200: ConceptSearchOut, **error_responses(404)})
def concept_search_read(request: HttpRequest, search_id: Identifier) -> ConceptSearchOut:
    """A search: its status and progress while it runs, its results once done."""
    return search_out(request, concept_search_get(search_id))


@router.post("/detector/new", auth=ApiKeyAuth(), url_name="api-detector-new",
             response={200: DetectorOut, **error_responses(400, 401)})
def detector_new(request: ApiKeyRequest, body: DetectorNewIn) -> DetectorOut:
    """Save one of a finished search's proposed detectors (by name, e.g. 'top 5 features'); it is the key holder's."""
    return detector_out(request, detector_create(body=body, owner=request.auth))


@router.get("/detector/{detector_id}", url_name="api-detector-get", response={200: DetectorOut, **error_responses(404)})
def detector_read(request: HttpRequest, detector_id: Identifier) -> DetectorOut:
    return detector_out(request, detector_get(detector_id))


@router.post("/detect", url_name="api-detect", response={200: DetectOut, **WORKER_ERRORS, **error_responses(404)})
def detect(request: HttpRequest, body: DetectIn) -> DetectOut:
    """Each text's score (weights x pooled activations + bias), whether it is above the threshold, and each token's
    contribution; with labels, the detector's accuracy, precision, recall, AUROC and ROC curve on them."""
    detector = detector_get(body.detector)
    LIVE_RATE.check(request)
    answer = detect_texts(detector=detector, body=body)
    vocabulary = vocabulary_for(detector.sae.language_model)
    results = [
        DetectionOut(text=text, score=found["score"], detected=found["detected"],
                     tokens=tokens_text(vocabulary, found["tokenIds"]), contributions=found["contributions"],
                     strongest_tokens=found["strongestToken"])
        for text, found in zip(body.texts, answer["results"], strict=True)
    ]
    return DetectOut(detector=detector.pk, threshold=detector.threshold, results=results,
                     evaluation=answer.get("evaluation"))
