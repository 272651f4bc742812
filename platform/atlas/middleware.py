"""The web edge's own middleware: every answer under /api/ is JSON (Django's error pages and unexpected exceptions
included), HEAD on the API answers as GET does without the body, and no address may carry a NUL character."""

import logging
from collections.abc import Callable

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseBase
from django.http.multipartparser import MultiPartParserError

from atlas.jsonapi import HTTP_ERROR_CODES, json_error

API_PREFIX = "/api/"
# Headers an error answer keeps when it is rewritten as JSON.
KEPT_HEADERS = ("Allow", "Retry-After")
NUL_MESSAGE = "The address holds a NUL character (%00); remove it and send the request again."
logger = logging.getLogger(__name__)

Handler = Callable[[HttpRequest], HttpResponseBase]


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


def too_big_message() -> str:
    return (f"The body is over the server's limit of {_mib(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)} "
            f"(DATA_UPLOAD_MAX_MEMORY_SIZE, not counting uploaded files, which may be up to "
            f"{_mib(settings.ATLAS_MAX_UPLOAD_BYTES)}: ATLAS_MAX_UPLOAD_BYTES); send less.")


def _status_message(status: int) -> str:
    """What to do about an error page Django made itself, by its status."""
    if status == 400:
        return ("The request was refused as malformed (a Host header outside ALLOWED_HOSTS, an unreadable "
                "multipart body or cookie); fix it and send it again.")
    if status == 413:
        return too_big_message()
    if status >= 500:
        return ("The server failed on this request; it is logged with its traceback. Try again, and if it keeps "
                "failing, tell the server's admin.")
    return f"The request was refused ({status}); /api/openapi.json lists the endpoints and what they take."


def _exception_answer(exception: Exception) -> HttpResponse | None:
    """The JSON answer to an exception a view raised, or None for those Django answers itself (404, 403)."""
    if isinstance(exception, Http404 | PermissionDenied):
        return None
    if isinstance(exception, RequestDataTooBig):
        return json_error(413, "too_large", too_big_message())
    if isinstance(exception, SuspiciousOperation | MultiPartParserError):
        return json_error(400, "bad_request", f"The request was refused: {exception}. Fix it and send it again.")
    logger.error("Unexpected error answering %s", exception.__class__.__name__, exc_info=exception)
    return json_error(500, "server_error", _status_message(500))


def _as_json(response: HttpResponseBase) -> HttpResponseBase:
    """An error answer that is not JSON (a page Django made) rewritten as JSON with the same status."""
    if response.status_code < 400 or response.get("Content-Type", "").startswith("application/json"):
        return response
    status = response.status_code
    answer = json_error(status, HTTP_ERROR_CODES.get(status, "server_error" if status >= 500 else "error"),
                        _status_message(status))
    for header in KEPT_HEADERS:
        if header in response:
            answer[header] = response[header]
    return answer


def _without_body(response: HttpResponseBase) -> HttpResponseBase:
    """The answer to HEAD: GET's status and headers (its Content-Length included), no body."""
    if isinstance(response, HttpResponse):
        length = response.get("Content-Length", str(len(response.content)))
        response.content = b""
        response["Content-Length"] = length
    return response


class ApiAnswersMiddleware:
    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        is_api = request.path.startswith(API_PREFIX)
        if "%00" in request.META.get("QUERY_STRING", ""):
            return json_error(400, "bad_request", NUL_MESSAGE) if is_api else HttpResponseBadRequest(
                NUL_MESSAGE, content_type="text/plain; charset=utf-8")
        if not is_api:
            return self.get_response(request)
        head = request.method == "HEAD"
        if head:
            request.method = "GET"  # ninja's routes are method-specific; HEAD is GET without the body
        response = _as_json(self.get_response(request))
        return _without_body(response) if head else response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith(API_PREFIX):
            return None
        return _exception_answer(exception)
