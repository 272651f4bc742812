"""Concept searches and detectors: a request checked and resolved (a plan), run by a worker while the request waits
when it is small, else stored as a job for the gpu queue that reports progress; detectors saved from a search's
candidates and applied to new texts by a worker."""

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from atlas.celery import app as celery_app
from atlas.concepts.models import ConceptSearch, Detector
from atlas.concepts.schemas import ConceptSearchIn, DetectIn, DetectorNewIn
from atlas.datasets.models import Dataset
from atlas.errors import NotFound
from atlas.features.live import worker_answer
from atlas.lms.models import LanguageModel
from atlas.saes.models import Sae, TaskStatus
from atlas.saes.selectors import sae_get
from atlas.vectors.models import HOOK_SOURCE_SUFFIX, Vector
from atlas.vectors.services import VectorRefused, vector_create

SEARCH_LIVE_TASK = "workers.tasks.concept_search_live"
SEARCH_JOB_TASK = "workers.tasks.concept_search_execute"
DETECT_TASK = "workers.tasks.detect_texts"
PROBE_NAMES = {"massMean": "mass-mean", "logistic": "logistic"}
# A saved probe's default steering strength, as Neuronpedia's default for a vector.
PROBE_VECTOR_STRENGTH = 10.0
# The probes need texts of both classes on both sides of a train/test split.
MIN_TEXTS_PER_CLASS = 4


class ConceptRefused(ValueError):
    """A request that cannot be searched or detected with; the message names the field and what to do."""


@dataclass(frozen=True)
class ConceptSearchPlan:
    language_model: LanguageModel
    saes: list[Sae]
    positives: list[str]
    negatives: list[str]
    dataset: Dataset | None
    dataset_negatives: int
    dataset_tokens: int
    pooling: str

    @property
    def n_texts(self) -> int:
        return len(self.positives) + len(self.negatives) + self.dataset_negatives


def concept_search_plan(body: ConceptSearchIn) -> ConceptSearchPlan:
    """Resolve the model, its SAEs and the dataset, and check there are enough texts of each class."""
    language_model = LanguageModel.objects.filter(slug=body.model_id).first()
    if language_model is None:
        raise ConceptRefused(f"'modelId' names no model: No model '{body.model_id}'. The home page lists the models "
                             "this server has.")
    saes = [_sae(language_model, source, f"sources[{position}]") for position, source in enumerate(body.sources)]
    if len({sae.pk for sae in saes}) != len(saes):
        raise ConceptRefused("'sources' names an SAE twice; name each once.")
    dataset = _dataset(language_model, body.negatives_dataset)
    dataset_negatives = 0
    if dataset is not None:
        dataset_negatives = len(body.positives) if body.dataset_negatives is None else body.dataset_negatives
        dataset_negatives = min(dataset_negatives, dataset.n_sequences)
    positives, negatives = _texts(body.positives, "positives"), _texts(body.negatives, "negatives")
    for name, count in (("positives", len(positives)), ("negatives", len(negatives) + dataset_negatives)):
        if count < MIN_TEXTS_PER_CLASS:
            raise ConceptRefused(
                f"'{name}' has {count} texts; give at least {MIN_TEXTS_PER_CLASS}, so that each class has texts to "
                "train the probes on and to test them on" + (" (or name a dataset for the negatives)."
                                                             if name == "negatives" else "."))
    return ConceptSearchPlan(language_model=language_model, saes=saes, positives=positives, negatives=negatives,
                             dataset=dataset, dataset_negatives=dataset_negatives, dataset_tokens=body.dataset_tokens,
                             pooling=body.pooling)


def _sae(language_model: LanguageModel, source: str, field: str) -> Sae:
    try:
        sae = sae_get(language_model.slug, source)
    except NotFound as error:
        raise ConceptRefused(f"'{field}' names no SAE of {language_model.slug}: {error}") from error
    if sae.published_run_id is None:
        raise ConceptRefused(f"'{field}': {sae} has no published dashboards yet; wait for its run to finish, so that "
                             "the ranked features have labels and densities.")
    return sae


def _dataset(language_model: LanguageModel, slug: str | None) -> Dataset | None:
    if slug is None:
        return None
    dataset = Dataset.objects.filter(slug=slug).first()
    if dataset is None:
        raise ConceptRefused(f"'negativesDataset' names no dataset: No dataset '{slug}'.")
    if dataset.language_model_id != language_model.pk:
        raise ConceptRefused(f"'negativesDataset': {slug} is tokenized for {dataset.language_model.slug}, not "
                             f"{language_model.slug}; name a dataset of that model.")
    return dataset


def _texts(texts: list[str], field: str) -> list[str]:
    """Texts stripped of surrounding whitespace; an empty one is refused, as it has no token to pool."""
    kept = [text.strip() for text in texts]
    for position, text in enumerate(kept):
        if not text:
            raise ConceptRefused(f"'{field}[{position}]' is empty; every text needs at least one word.")
    return kept


def concept_search_create(*, plan: ConceptSearchPlan, creator: User | None) -> ConceptSearch:
    """A small search is run while the request waits and stored done (nothing is stored if it fails: the error is
    raised); a large one is stored queued and sent to the gpu queue when the row is committed."""
    search = ConceptSearch(
        language_model=plan.language_model, sae_ids=[sae.pk for sae in plan.saes], pooling=plan.pooling,
        positives=plan.positives, negatives=plan.negatives, dataset=plan.dataset,
        dataset_negatives=plan.dataset_negatives, dataset_tokens=plan.dataset_tokens, creator=creator,
        progress_total=plan.n_texts * len(plan.saes))
    if plan.n_texts * len(plan.saes) <= settings.ATLAS_CONCEPT_LIVE_TEXTS:
        answer = worker_answer(SEARCH_LIVE_TASK, timeout=settings.ATLAS_CONCEPT_TIMEOUT_SECONDS,
                               request=search.request)
        search.results, search.status, search.progress_done = answer["results"], TaskStatus.SUCCEEDED, \
            search.progress_total
        search.save()
        return search
    with transaction.atomic():
        search.save()
        queue = settings.ATLAS_GPU_QUEUE
        transaction.on_commit(lambda: celery_app.send_task(SEARCH_JOB_TASK, args=[search.pk], queue=queue))
    return search


def concept_search_start(*, search_id: str) -> ConceptSearch | None:
    """The worker takes a queued (or, redelivered, running) search; None when it is gone or done with."""
    with transaction.atomic():
        search = ConceptSearch.objects.select_for_update().filter(pk=search_id).first()
        if search is None or search.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING):
            return None
        search.status, search.progress_done = TaskStatus.RUNNING, 0
        search.save(update_fields=["status", "progress_done"])
    return search


def concept_search_progress(*, search_id: str, done: int, total: int) -> None:
    ConceptSearch.objects.filter(pk=search_id).update(progress_done=done, progress_total=total)


def concept_search_finish(*, search_id: str, results: list[dict[str, Any]]) -> None:
    ConceptSearch.objects.filter(pk=search_id).update(
        results=results, status=TaskStatus.SUCCEEDED, error="")


def concept_search_fail(*, search_id: str, message: str) -> None:
    ConceptSearch.objects.filter(pk=search_id).update(status=TaskStatus.FAILED, error=message)


def detector_create(*, body: DetectorNewIn, owner: User) -> Detector:
    """A detector from one of a finished search's candidates, with that candidate's held-out evaluation."""
    search = ConceptSearch.objects.filter(pk=body.search_id).first()
    if search is None:
        raise ConceptRefused(f"'searchId' names no concept search: No search '{body.search_id}'.")
    if search.status != TaskStatus.SUCCEEDED:
        raise ConceptRefused(f"'searchId': search {search.pk} is {search.status}; save a detector once it has "
                             "succeeded.")
    sae = _sae(search.language_model, body.source, "source")
    result = next((found for found in search.results if found["saeId"] == sae.pk), None)
    if result is None:
        raise ConceptRefused(f"'source': search {search.pk} did not search {body.source}.")
    candidate = next((found for found in result["detectors"] if found["name"] == body.candidate), None)
    if candidate is None:
        names = ", ".join(f"'{found['name']}'" for found in result["detectors"])
        raise ConceptRefused(f"'candidate' is '{body.candidate}'; the search proposes {names}.")
    return Detector.objects.create(
        name=body.name.strip() or candidate["name"], sae=sae, kind=candidate["kind"], pooling=candidate["pooling"],
        features=candidate["features"], weights=candidate["weights"], bias=candidate["bias"],
        threshold=candidate["threshold"], evaluation=candidate["evaluation"], search=search, owner=owner)


def detect_texts(*, detector: Detector, body: DetectIn) -> dict[str, Any]:
    """The worker's scores of each text (WorkerUnavailable, WorkerFailed, LiveTextRefused when it cannot)."""
    if body.labels is not None:
        if len(body.labels) != len(body.texts):
            raise ConceptRefused(f"'labels' has {len(body.labels)} values for {len(body.texts)} texts; give one per "
                                 "text.")
        if all(body.labels) or not any(body.labels):
            raise ConceptRefused("'labels' are all of one class; an evaluation needs positive and negative texts.")
    texts = _texts(body.texts, "texts")
    return worker_answer(DETECT_TASK, timeout=settings.ATLAS_CONCEPT_TIMEOUT_SECONDS,
                         request={**detector.spec, "texts": texts, "labels": body.labels})


def probe_vector_save(*, search: ConceptSearch, source: str, probe: str, owner: User) -> Vector:
    """A probe's direction stored as a vector at its SAE's hook, to steer with or compute a dashboard of; only at a
    residual-stream hook, where vectors live."""
    if probe not in PROBE_NAMES:
        raise ConceptRefused(f"'probe' is '{probe}'; save 'massMean' or 'logistic'.")
    sae = _sae(search.language_model, source, "source")
    result = next((found for found in search.results if found["saeId"] == sae.pk), None)
    if result is None:
        raise ConceptRefused(f"'source': search {search.pk} did not search {source}.")
    parts = sae.hook_name.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or parts[2] not in HOOK_SOURCE_SUFFIX:
        raise ConceptRefused(f"{sae} reads {sae.hook_name}; vectors live at hook_resid_pre or hook_resid_post only, so "
                             "this probe can be steered with through the API's raw vectors, not saved.")
    try:
        return vector_create(language_model_slug=search.language_model.slug, layer=int(parts[1]),
                             hook_type=parts[2], values=result["probes"][probe]["direction"],
                             label=f"{PROBE_NAMES[probe]} probe of concept search {search.pk} ({sae.slug})",
                             default_strength=PROBE_VECTOR_STRENGTH, owner=owner)
    except VectorRefused as error:
        raise ConceptRefused(str(error)) from error
