"""Pages: /concepts (the form), /concepts/<id> (a search's results, with a live bar while it runs), /detectors/<id>
(a saved detector: its evaluation, its ROC curve and a box to try it on text)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods, require_POST
from pydantic import ValidationError

from atlas.accounts.auth import LoggedInRequest
from atlas.concepts.forms import ConceptSearchForm, DetectorSaveForm
from atlas.concepts.models import ConceptSearch
from atlas.concepts.schemas import ConceptSearchIn, DetectorNewIn
from atlas.concepts.selectors import concept_search_get, detector_get, search_results_shown, search_saes
from atlas.concepts.services import (
    ConceptRefused,
    concept_search_create,
    concept_search_plan,
    detector_create,
    probe_vector_save,
)
from atlas.datasets.selectors import datasets_list
from atlas.errors import NotFound
from atlas.features.live import LiveActivationError
from atlas.jsonapi import validation_message
from atlas.lms.selectors import language_models_list
from atlas.saes.selectors import saes_list
from workers.compute.corpus import CorpusFormatError, documents_from_jsonl


def _form_context(form: ConceptSearchForm, error: str | None) -> dict[str, object]:
    sources: dict[str, list[str]] = {}
    for sae in saes_list():
        if sae.published_run_id is not None:
            sources.setdefault(sae.language_model.slug, []).append(sae.slug)
    return {"form": form, "error": error, "language_models": language_models_list(), "sources": sources,
            "datasets": datasets_list()}


@require_http_methods(["GET", "HEAD", "POST"])
def concepts_page(request: HttpRequest) -> HttpResponse:
    """The form; a POST runs the search (answered at once when small) and opens its page."""
    form = ConceptSearchForm(request.POST or None, request.FILES or None, initial=request.GET.dict())
    if request.method != "POST":
        return render(request, "concepts.html", _form_context(form, None))
    try:
        body = _search_body(form)
        creator = request.user if request.user.is_authenticated else None
        search = concept_search_create(plan=concept_search_plan(body), creator=creator)
    except (ConceptRefused, LiveActivationError) as error:
        return render(request, "concepts.html", _form_context(form, str(error)), status=_status(error))
    return HttpResponseRedirect(reverse("concept-search", args=[search.pk]))


def _status(error: Exception) -> int:
    return 400 if isinstance(error, ConceptRefused) else 503


def _search_body(form: ConceptSearchForm) -> ConceptSearchIn:
    if not form.is_valid():
        raise ConceptRefused("; ".join(f"{name}: {' '.join(map(str, errors))}" for name, errors in form.errors.items()))
    data = form.cleaned_data
    try:
        return ConceptSearchIn.model_validate({
            "modelId": data["model"], "sources": [part.strip() for part in data["sources"].split(",") if part.strip()],
            "pooling": data["pooling"], "positives": _texts(data["positives"], data["positives_file"], "positives"),
            "negatives": _texts(data["negatives"], data["negatives_file"], "negatives"),
            "negativesDataset": data["negatives_dataset"] or None, "datasetNegatives": data["dataset_negatives"]})
    except ValidationError as error:
        raise ConceptRefused(validation_message(error.errors())) from error


def _texts(pasted: str, upload: UploadedFile[bytes] | None, field: str) -> list[str]:
    """Pasted lines, then the uploaded file's texts; a file that is not UTF-8 .txt or .jsonl is refused by name."""
    texts = [line for line in pasted.splitlines() if line.strip()]
    if upload is None:
        return texts
    name = upload.name or "upload"
    try:
        content = upload.read().decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConceptRefused(f"{field}: {name} is not UTF-8 text ({error.reason} at byte {error.start}).") from error
    if name.endswith(".jsonl"):
        try:
            return texts + documents_from_jsonl(content.splitlines())
        except CorpusFormatError as error:
            raise ConceptRefused(f"{field}: {name}: {error}") from error
    if not name.endswith(".txt"):
        raise ConceptRefused(f"{field}: {name} is neither .txt (one text per line) nor .jsonl (one {{\"text\": ...}} "
                             "per line).")
    return texts + [line for line in content.splitlines() if line.strip()]


def concept_search_page(request: HttpRequest, search_id: str) -> HttpResponse:
    try:
        search = concept_search_get(search_id)
    except NotFound as error:
        raise Http404(str(error)) from error
    results = search_results_shown(search)
    return render(request, "concept_search.html", {
        "search": search, "results": results, "sources": [sae.slug for sae in search_saes(search)],
        "texts": _text_labels(search),
    })


def _text_labels(search: ConceptSearch) -> list[str]:
    """Each text's start, positives then negatives, for the chart's hover."""
    return [text[:80] for text in [*search.positives, *search.negatives]]


@require_POST
@login_required
def detector_save(request: LoggedInRequest, search_id: str) -> HttpResponse:
    form = DetectorSaveForm(request.POST)
    if not form.is_valid():
        return HttpResponse("Give the detector a name, a source and a candidate.", status=400)
    body = DetectorNewIn.model_validate({"searchId": search_id, **form.cleaned_data})
    try:
        detector = detector_create(body=body, owner=request.user)
    except ConceptRefused as error:
        return HttpResponse(str(error), status=400, content_type="text/plain")
    return HttpResponseRedirect(reverse("detector", args=[detector.pk]))


@require_POST
@login_required
def probe_vector_page(request: LoggedInRequest, search_id: str) -> HttpResponse:
    """Save a probe's direction as a vector and open its page (steer with it, compute its dashboard)."""
    try:
        search = concept_search_get(search_id)
        vector = probe_vector_save(search=search, source=request.POST.get("source", ""),
                                   probe=request.POST.get("probe", ""), owner=request.user)
    except NotFound as error:
        raise Http404(str(error)) from error
    except ConceptRefused as error:
        return HttpResponse(str(error), status=400, content_type="text/plain")
    return HttpResponseRedirect(reverse("vector", args=[vector.language_model.slug, vector.source, vector.pk]))


def detector_page(request: HttpRequest, detector_id: str) -> HttpResponse:
    try:
        detector = detector_get(detector_id)
    except NotFound as error:
        raise Http404(str(error)) from error
    return render(request, "detector.html", {"detector": detector})
