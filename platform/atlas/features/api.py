"""JSON API: features in Neuronpedia's field names, and run progress for the SAE page."""

from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from atlas.features.selectors import NotFound, feature_detail, feature_payload, run_get, run_payload


def json_error(status: int, error: str, message: str) -> JsonResponse:
    return JsonResponse({"error": error, "message": message}, status=status)


@require_GET
def feature(request: HttpRequest, model_id: str, sae_id: str, index: int) -> JsonResponse:
    try:
        view = feature_detail(model_id, sae_id, index)
    except NotFound as error:
        return json_error(404, "not_found", str(error))
    return JsonResponse(feature_payload(view))


@require_GET
def run_status(request: HttpRequest, run_id: int) -> JsonResponse:
    try:
        return JsonResponse(run_payload(run_get(run_id)))
    except NotFound as error:
        return json_error(404, "not_found", str(error))


def unknown_endpoint(request: HttpRequest, path: str) -> JsonResponse:
    return json_error(404, "not_found", f"No API endpoint /api/{path}. See the README for the endpoints.")
