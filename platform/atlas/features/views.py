"""HTML pages: home, an SAE's feature list with its run progress, one feature's dashboard, activation search."""

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from atlas.datasets.selectors import datasets_list
from atlas.errors import NotFound
from atlas.explanations.forms import ExplanationForm
from atlas.explanations.selectors import feature_explanations
from atlas.features.forms import FeatureListForm
from atlas.features.schemas import (
    DENSITY_THRESHOLD_DEFAULT,
    SEARCH_RESULTS_DEFAULT,
    SEARCH_RESULTS_MAX,
    TOPK_BY_TOKEN_DEFAULT,
    TOPK_BY_TOKEN_MAX,
)
from atlas.features.selectors import (
    FeatureSort,
    feature_detail,
    feature_list_query,
    feature_random_index,
    sae_features_page,
)
from atlas.lms.selectors import language_models_list
from atlas.saes.selectors import sae_feature_vector, sae_get, sae_latest_run, saes_list, saes_with_latest_run

SORT_COLUMN_TITLES = [(FeatureSort.INDEX, "Feature"), (FeatureSort.DENSITY, "log₁₀ density"),
                      (FeatureSort.MAX_ACT, "Max activation")]


def home(request: HttpRequest) -> HttpResponse:
    context = {"models": language_models_list(), "datasets": datasets_list(), "sae_rows": saes_with_latest_run()}
    return render(request, "home.html", context)


def sae_page(request: HttpRequest, model_id: str, sae_id: str) -> HttpResponse:
    try:
        sae = sae_get(model_id, sae_id)
    except NotFound as error:
        raise Http404(str(error)) from error
    jump = request.GET.get("index", "").strip()
    if jump.isdigit():
        return redirect("feature", model_id=model_id, sae_id=sae_id, index=int(jump))
    around = request.GET.get("around", "").strip()
    if around.isdigit():
        return redirect(f"{request.path}?{feature_list_query(sae, int(around))}")
    form = FeatureListForm(request.GET)
    form.is_valid()
    listing = form.listing()
    features = sae_features_page(sae, listing, request.GET.get("page")) if sae.published_run_id else None
    context = {
        "sae": sae,
        "run": sae_latest_run(sae),
        "form": form,
        "listing": listing,
        "sort_columns": SORT_COLUMN_TITLES,
        "features": features,
        "labels": feature_explanations(sae, [feature.index for feature in features or []]),
        "jump_error": f"'{jump}' is not a feature index; enter a number from 0 to {sae.d_sae - 1}." if jump else "",
    }
    return render(request, "sae.html", context)


def feature_random(request: HttpRequest, model_id: str, sae_id: str) -> HttpResponse:
    try:
        index = feature_random_index(sae_get(model_id, sae_id))
    except NotFound as error:
        raise Http404(str(error)) from error
    return redirect("feature", model_id=model_id, sae_id=sae_id, index=index)


def feature_page(request: HttpRequest, model_id: str, sae_id: str, index: int) -> HttpResponse:
    try:
        view = feature_detail(model_id, sae_id, index)
    except NotFound as error:
        raise Http404(str(error)) from error
    context = {
        "view": view,
        "sae": view.sae,
        "explanation_form": ExplanationForm(),
        "live_max_characters": settings.ATLAS_LIVE_MAX_CHARACTERS,
        "neighbour_labels": feature_explanations(view.sae, [neighbour for neighbour, _ in view.neighbours]),
        "act_hist": {"x": view.act_hist.centers, "y": view.act_hist.heights},
        "logit_hist": {"x": view.logit_hist.centers, "y": view.logit_hist.heights},
        "previous_index": index - 1 if index > 0 else None,
        "next_index": index + 1 if index + 1 < view.sae.d_sae else None,
        "feature_vector": sae_feature_vector(view.sae, index),
    }
    return render(request, "feature.html", context)


def activation_search(request: HttpRequest) -> HttpResponse:
    """Typed text in, the SAE's strongest features out, and each token's own; the page asks POST /api/search-all
    and /api/search-topk-by-token from the browser."""
    saes = saes_list()
    model, source = request.GET.get("model", ""), request.GET.get("source", "")
    selected = next((sae for sae in saes if (sae.language_model.slug, sae.slug) == (model, source)), None)
    context = {
        "saes": saes,
        "selected": selected,
        "results_default": SEARCH_RESULTS_DEFAULT,
        "results_max": SEARCH_RESULTS_MAX,
        "topk_default": TOPK_BY_TOKEN_DEFAULT,
        "topk_max": TOPK_BY_TOKEN_MAX,
        "density_default": DENSITY_THRESHOLD_DEFAULT,
        "live_max_characters": settings.ATLAS_LIVE_MAX_CHARACTERS,
    }
    return render(request, "activation_search.html", context)
