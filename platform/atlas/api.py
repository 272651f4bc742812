"""The JSON API under /api/: one NinjaAPI holding each app's router, the errors every endpoint answers with, and
its URLs (each path with or without a trailing slash, as Neuronpedia's clients send either)."""

import json
from collections.abc import Callable
from functools import partial, wraps
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotAllowed, JsonResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_safe
from ninja import NinjaAPI, Swagger
from ninja.errors import HttpError, ValidationError
from ninja.responses import NinjaJSONEncoder

from atlas.concepts.api import router as concepts_router
from atlas.concepts.services import ConceptRefused
from atlas.errors import NotFound
from atlas.explanations.api import router as explanations_router
from atlas.explanations.services import ExplanationError
from atlas.features.api import router as features_router
from atlas.features.live import LiveTextRefused, WorkerFailed, WorkerUnavailable
from atlas.jsonapi import (
    HTTP_ERROR_CODES,
    JSON_MAX_DEPTH,
    ApiError,
    BodyRefused,
    JsonParser,
    json_error,
    validation_message,
)
from atlas.lists.api import router as lists_router
from atlas.lists.services import ListForbidden, ListRefused
from atlas.middleware import too_big_message
from atlas.ratelimit import RateLimited
from atlas.saes.api import router as saes_router
from atlas.saes.services import SaeActionConflict, SaeActionForbidden
from atlas.steering.api import router as steering_router
from atlas.steering.services import SteerRefused
from atlas.vectors.api import router as vectors_router
from atlas.vectors.services import VectorForbidden, VectorRefused

View = Callable[..., HttpResponseBase]
# Errors the apps raise, and the answer each becomes wherever it is raised.
ERROR_ANSWERS: dict[type[Exception], tuple[int, str]] = {
    NotFound: (404, "not_found"),
    ExplanationError: (400, "bad_request"),
    LiveTextRefused: (400, "bad_request"),
    WorkerFailed: (502, "worker_failed"),
    WorkerUnavailable: (503, "no_worker"),
    SaeActionForbidden: (403, "forbidden"),
    SaeActionConflict: (409, "conflict"),
    VectorRefused: (400, "bad_request"),
    VectorForbidden: (403, "forbidden"),
    SteerRefused: (400, "bad_request"),
    ConceptRefused: (400, "bad_request"),
    ListRefused: (400, "bad_request"),
    ListForbidden: (403, "forbidden"),
}
DESCRIPTION = (
    "Neuronpedia-compatible reads (public) and writes (an API key from /account/ in the x-api-key header). "
    'Errors are JSON {"error", "message"} with a 4xx status (5xx: no worker answered, or it failed). '
    "Every path takes a trailing slash too. "
    f"Bodies are UTF-8 JSON nested at most {JSON_MAX_DEPTH} deep, each key once per object, with no NUL or lone "
    "surrogate in a string (a 400 naming the field), within DATA_UPLOAD_MAX_MEMORY_SIZE (a 413). Live activations, "
    "activation search and new steering results are limited to ATLAS_LIVE_RATE per API key, user or address (a "
    "429 with Retry-After)."
)


class AtlasApi(NinjaAPI):
    """Its URLs are included without a namespace, so that they keep the names pages reverse (`api-feature`,
    `api-run`, ...); ninja's own reverse() of its root assumes a namespace."""

    def get_root_path(self, path_params: dict[str, Any]) -> str:
        return reverse("api-root", kwargs=path_params)

    def get_content_type(self) -> str:
        # As the API has always answered: JSON defines no charset parameter (RFC 8259).
        return "application/json"


class LocalSwagger(Swagger):
    """The interactive docs from ninja's own static files (it is an installed app), never from a CDN."""

    def get_openapi_url(self, api: NinjaAPI, path_params: dict[str, Any]) -> str:
        return reverse("openapi-json", kwargs=path_params)


api = AtlasApi(title="SAE Atlas API", version="1", description=DESCRIPTION, docs=LocalSwagger(), parser=JsonParser())
api.add_router("", features_router)
api.add_router("", explanations_router)
api.add_router("", saes_router)
api.add_router("", vectors_router)
api.add_router("", steering_router)
api.add_router("", concepts_router)
api.add_router("", lists_router)


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, error: ValidationError) -> HttpResponse:
    """A body or path that its schema refuses: 400 naming each field, where ninja would answer 422."""
    return json_error(400, "bad_request", validation_message(error.errors))


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, error: HttpError) -> HttpResponse:
    """What ninja refuses itself: a body it cannot parse (the parser's error is the cause), a missing API key."""
    if error.status_code == 400 and isinstance(error.__cause__, BodyRefused):
        return json_error(400, "bad_request", str(error.__cause__))
    if error.status_code == 400 and isinstance(error.__cause__, ValueError):
        return json_error(400, "bad_request", f"The body is not JSON: {error.__cause__}.")
    return json_error(error.status_code, HTTP_ERROR_CODES.get(error.status_code, "error"), str(error))


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, error: RequestDataTooBig) -> HttpResponse:
    return json_error(413, "too_large", too_big_message())


@api.exception_handler(RateLimited)
def _rate_limited(request: HttpRequest, error: RateLimited) -> HttpResponse:
    answer = json_error(429, "too_many_requests", error.message)
    answer["Retry-After"] = str(error.retry_after)
    return answer


@api.exception_handler(ApiError)
def _api_error(request: HttpRequest, error: ApiError) -> HttpResponse:
    return json_error(error.status, error.code, error.message)


def _answer(request: HttpRequest, error: Exception, *, status: int, code: str) -> HttpResponse:
    return json_error(status, code, str(error))


for error_class, (error_status, error_code) in ERROR_ANSWERS.items():
    api.add_exception_handler(error_class, partial(_answer, status=error_status, code=error_code))


def unknown_endpoint(request: HttpRequest, path: str) -> JsonResponse:
    return json_error(404, "not_found", f"No API endpoint /api/{path}. /api/openapi.json lists the endpoints.")


def _json_not_allowed(view: View) -> View:
    """Ninja's and Django's 405 is plain text; the API's is JSON, with the same Allow header."""

    @wraps(view)
    def answered(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        if not isinstance(response, HttpResponseNotAllowed):
            return response
        allowed = response["Allow"]
        refused = json_error(405, "method_not_allowed", f"Use {' or '.join(allowed.split(', '))} here.")
        refused["Allow"] = allowed
        return refused

    return answered


def _api_urlpatterns() -> list[URLPattern]:
    """Ninja's URLs, each endpoint also with a trailing slash, every 405 in JSON, and the API's root a JSON 404.
    The document and the docs page answer GET and HEAD only (ninja's answer every method)."""
    patterns: list[URLPattern] = []
    for pattern in api.urls[0]:
        assert isinstance(pattern, URLPattern)  # ninja makes no nested includes
        route, view = str(pattern.pattern), pattern.callback
        if pattern.name == "api-root":
            patterns.append(path(route, unknown_endpoint, {"path": route}, name=pattern.name))
        elif pattern.name in {"openapi-json", "openapi-view"}:
            patterns.append(path(route, _json_not_allowed(require_safe(view)), name=pattern.name))
        else:
            view = _json_not_allowed(view)
            patterns += [path(route, view, name=pattern.name), path(f"{route}/", view)]
    return patterns


urlpatterns = _api_urlpatterns()


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document as GET /api/openapi.json serves it (through JSON: statuses become strings)."""
    document: dict[str, Any] = json.loads(json.dumps(api.get_openapi_schema(), cls=NinjaJSONEncoder))
    return document
