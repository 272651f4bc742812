"""JSON API: features in Neuronpedia's field names (one, a list, a page by offset), live activations of typed
text (one feature, or the SAE's top features), and run progress."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from atlas.errors import NotFound
from atlas.features.live import (
    FeatureOnText,
    LiveActivationError,
    LiveActivations,
    LiveTextRefused,
    WorkerUnavailable,
    feature_activations_live,
    top_features_live,
)
from atlas.features.selectors import (
    FeatureView,
    feature_detail,
    feature_payload,
    features_detail,
    features_offset,
)
from atlas.jsonapi import ApiError, api_endpoint, body_field, body_object, json_body, json_error
from atlas.saes.models import Sae
from atlas.saes.selectors import run_get, run_payload, sae_get, saes_of_source_set

# A bound on one POST /api/features, so a single request cannot ask the server to decode a whole SAE.
FEATURES_PER_REQUEST = 100
# POST /api/search-all returns this many features unless numResults says otherwise, and never more than the max.
SEARCH_RESULTS_DEFAULT = 20
SEARCH_RESULTS_MAX = 100


@api_endpoint(("GET",))
def feature(request: HttpRequest, model_id: str, sae_id: str, index: str) -> JsonResponse:
    try:
        view = feature_detail(model_id, sae_id, int(index))
    except NotFound as error:
        return json_error(404, "not_found", str(error))
    return JsonResponse(feature_payload(view))


def feature_index(body: dict[str, Any]) -> int:
    """Neuronpedia's clients send the index as a number or as a string of digits."""
    index = body.get("index")
    if isinstance(index, str) and index.isdigit():
        return int(index)
    index = body_field(body, "index", int)
    if index < 0:
        raise ApiError(400, "bad_request", "'index' must not be negative.")
    return index


def sae_of(body: dict[str, Any]) -> Sae:
    try:
        return sae_get(body_field(body, "modelId", str), body_field(body, "layer", str))
    except NotFound as error:
        raise ApiError(404, "not_found", str(error)) from error


@api_endpoint(("POST",))
def features(request: HttpRequest) -> JsonResponse:
    """POST [{modelId, layer, index}, ...]: the features in the order asked; any missing one is a 404."""
    lookups = json_body(request)
    if not isinstance(lookups, list) or not 0 < len(lookups) <= FEATURES_PER_REQUEST:
        raise ApiError(400, "bad_request", f"Send a list of 1 to {FEATURES_PER_REQUEST} {{modelId, layer, index}}.")
    wanted = [(sae_of(body), feature_index(body)) for body in map(body_object, lookups)]
    found: dict[tuple[int, int], FeatureView] = {}
    for sae in {sae.pk: sae for sae, _ in wanted}.values():
        found |= {(sae.pk, view.feature.index): view for view in
                  features_detail(sae, [index for other, index in wanted if other.pk == sae.pk])}
    for sae, index in wanted:
        if (sae.pk, index) not in found:
            raise ApiError(404, "not_found", f"{sae} has no published feature {index}.")
    return JsonResponse([feature_payload(found[sae.pk, index]) for sae, index in wanted], safe=False)


@api_endpoint(("POST",))
def features_by_offset(request: HttpRequest) -> JsonResponse:
    """POST {modelId, layer, offset}: the features from index `offset` on, a page of them."""
    body = body_object(json_body(request))
    sae = sae_of(body)
    offset = body_field(body, "offset", int)
    if offset < 0:
        raise ApiError(400, "bad_request", "'offset' must not be negative.")
    return JsonResponse([feature_payload(view) for view in features_offset(sae, offset)], safe=False)


def _text(body: dict[str, Any], name: str) -> str:
    text = body_field(body, name, str)
    if not text.strip():
        raise ApiError(400, "bad_request", f"'{name}' is empty; type some words.")
    if len(text) > settings.ATLAS_LIVE_MAX_CHARACTERS:
        raise ApiError(400, "bad_request", f"'{name}' has {len(text)} characters; send at most "
                                           f"{settings.ATLAS_LIVE_MAX_CHARACTERS}.")
    return text


def _live_error(error: LiveActivationError) -> ApiError:
    if isinstance(error, WorkerUnavailable):
        return ApiError(503, "no_worker", str(error))
    if isinstance(error, LiveTextRefused):
        return ApiError(400, "bad_request", str(error))
    return ApiError(502, "worker_failed", str(error))


def _feature_on_text(sae: Sae, live: LiveActivations, found: FeatureOnText) -> dict[str, Any]:
    return {
        "modelId": sae.language_model.slug,
        "layer": sae.slug,
        "index": found.index,
        "tokens": live.tokens,
        "values": found.values,
        "maxValue": found.max_value,
        "maxValueTokenIndex": found.max_value_token_index,
        "minValue": min(found.values, default=0.0),
    }


@api_endpoint(("POST",))
def activation_new(request: HttpRequest) -> JsonResponse:
    """POST {feature: {modelId, source, index}, customText}: the feature's activation on each token of the text."""
    body = body_object(json_body(request))
    lookup = body_object(body.get("feature"), "'feature'")
    # Neuronpedia calls the SAE `source` here and `layer` elsewhere; either is taken.
    sae = sae_of({**lookup, "layer": lookup.get("source", lookup.get("layer"))})
    index = feature_index(lookup)
    if index >= sae.d_sae:
        raise ApiError(404, "not_found", f"{sae} has features 0 to {sae.d_sae - 1}; there is no feature {index}.")
    text = _text(body, "customText")
    try:
        live = feature_activations_live(sae=sae, index=index, text=text)
    except LiveActivationError as error:
        raise _live_error(error) from error
    return JsonResponse(_feature_on_text(sae, live, live.features[0]))


def _search_saes(body: dict[str, Any]) -> list[Sae]:
    """One SAE by `source` (or `layer`), or every SAE of the model in `sourceSet` (slugs ending in -<set>)."""
    if "sourceSet" in body and "source" not in body:
        model_id, source_set = body_field(body, "modelId", str), body_field(body, "sourceSet", str)
        saes = saes_of_source_set(model_id, source_set)
        if not saes:
            raise ApiError(404, "not_found", f"Model '{model_id}' has no SAE in source set '{source_set}'.")
        return saes
    if body.get("source", body.get("layer")) is None:
        raise ApiError(400, "bad_request", "Send 'source' (one SAE) or 'sourceSet' (SAEs named <layer>-<set>).")
    return [sae_of({**body, "layer": body.get("source", body.get("layer"))})]


def _results_wanted(body: dict[str, Any]) -> int:
    if body.get("numResults") is None:
        return SEARCH_RESULTS_DEFAULT
    wanted = body_field(body, "numResults", int)
    if not 1 <= wanted <= SEARCH_RESULTS_MAX:
        raise ApiError(400, "bad_request", f"'numResults' must be 1 to {SEARCH_RESULTS_MAX}.")
    return wanted


@api_endpoint(("POST",))
def search_all(request: HttpRequest) -> JsonResponse:
    """POST {modelId, source | sourceSet, text, numResults}: the features that fire most strongly on the text."""
    body = body_object(json_body(request))
    saes = _search_saes(body)
    text = _text(body, "text")
    wanted = _results_wanted(body)
    found: list[dict[str, Any]] = []
    tokens: list[str] = []
    try:
        for sae in saes:
            live = top_features_live(sae=sae, text=text, n_results=wanted)
            tokens = live.tokens
            found += [_feature_on_text(sae, live, feature) for feature in live.features]
    except LiveActivationError as error:
        raise _live_error(error) from error
    found.sort(key=lambda result: -result["maxValue"])
    return JsonResponse({"tokens": tokens, "result": found[:wanted]})


@api_endpoint(("GET",))
def run_status(request: HttpRequest, run_id: str) -> JsonResponse:
    try:
        return JsonResponse(run_payload(run_get(int(run_id))))
    except NotFound as error:
        return json_error(404, "not_found", str(error))


def unknown_endpoint(request: HttpRequest, path: str) -> JsonResponse:
    return json_error(404, "not_found", f"No API endpoint /api/{path}. /api/openapi.json lists the endpoints.")
