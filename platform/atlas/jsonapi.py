"""The JSON API's edges: errors as {"error", "message"} with a 4xx, typed request bodies, API-key writes."""

import json
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from atlas.accounts.selectors import api_key_user

API_KEY_HEADER = "x-api-key"
T = TypeVar("T")


class ApiError(Exception):
    """A request the API refuses; becomes `{"error": code, "message": message}` with this status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def json_error(status: int, error: str, message: str) -> JsonResponse:
    return JsonResponse({"error": error, "message": message}, status=status)


def api_endpoint(methods: tuple[str, ...]) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """JSON-only: other methods are a JSON 405, an ApiError becomes its JSON 4xx. Sessions play no part
    (writes authenticate by API key), so CSRF does not apply."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @csrf_exempt
        @wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = json_error(405, "method_not_allowed", f"Use {' or '.join(methods)} here.")
                response["Allow"] = ", ".join(methods)
                return response
            try:
                return view(request, *args, **kwargs)
            except ApiError as error:
                return json_error(error.status, error.code, error.message)

        return wrapped

    return decorate


def api_user(request: HttpRequest) -> User:
    """The user whose key is in the x-api-key header; writes need one."""
    secret = request.headers.get(API_KEY_HEADER, "").strip()
    if not secret:
        raise ApiError(401, "unauthorized", f"Send an API key in the {API_KEY_HEADER} header; make one at /account/.")
    user = api_key_user(secret)
    if user is None:
        raise ApiError(401, "unauthorized", "That API key is not valid; it may have been revoked.")
    return user


def json_body(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, "bad_request", f"The body is not JSON: {error}.") from error


def body_object(value: Any, what: str = "The body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", f"{what} must be a JSON object.")
    return value


def body_field(body: dict[str, Any], name: str, kind: type[T]) -> T:
    """A required field of one JSON type; bool never passes for int, although Python says it is one."""
    value = body.get(name)
    if value is None:
        raise ApiError(400, "bad_request", f"'{name}' is required.")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ApiError(400, "bad_request", f"'{name}' must be a {_json_type_name(kind)}.")
    return value


def _json_type_name(kind: type) -> str:
    return {str: "string", int: "integer", list: "list", dict: "object"}.get(kind, kind.__name__)
