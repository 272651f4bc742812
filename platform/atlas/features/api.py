"""JSON API: features in Neuronpedia's field names (one, a list, a page by offset), and run progress."""

from typing import Any

from django.http import HttpRequest, JsonResponse

from atlas.features.selectors import (
    FeatureView,
    NotFound,
    feature_detail,
    feature_payload,
    features_detail,
    features_offset,
    run_get,
    run_payload,
    sae_get,
)
from atlas.jsonapi import ApiError, api_endpoint, body_field, body_object, json_body, json_error
from atlas.saes.models import Sae

# A bound on one POST /api/features, so a single request cannot ask the server to decode a whole SAE.
FEATURES_PER_REQUEST = 100


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


@api_endpoint(("GET",))
def run_status(request: HttpRequest, run_id: str) -> JsonResponse:
    try:
        return JsonResponse(run_payload(run_get(int(run_id))))
    except NotFound as error:
        return json_error(404, "not_found", str(error))


def unknown_endpoint(request: HttpRequest, path: str) -> JsonResponse:
    return json_error(404, "not_found", f"No API endpoint /api/{path}. /api/openapi.json lists the endpoints.")
