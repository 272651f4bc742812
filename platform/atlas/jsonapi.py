"""What every JSON API endpoint shares: schema bases, the id and index types, errors as {"error", "message"}."""

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from django.http import JsonResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StringConstraints, WithJsonSchema
from pydantic_core import PydanticCustomError

# Model and SAE ids as they appear in addresses (`gpt2-small`, `5-res-jb`); anything else cannot name one.
IDENTIFIER_PATTERN = r"^[-\w.]+$"
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN)]
# Errors a message lists before it says how many more there are: enough to fix a body, short enough to read.
ERRORS_LISTED = 5
# Pydantic's error types in our words, as the rest of a sentence after the field; {names} come from its context.
PROBLEMS = {
    "missing": "is required",
    "int_type": "must be an integer",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "dict_type": "must be a JSON object",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "too_short": "must hold at least {min_length} item(s)",
    "too_long": "must hold at most {max_length} items",
    "string_pattern_mismatch": "must match {pattern}",
}


def _json_integer(value: object) -> object:
    """A whole number written with a fraction (3.0) is an integer to JSON Schema, and to JavaScript clients."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON's integers; strict, so that neither a bool (an int to Python) nor a string passes for one.
JsonInteger = Annotated[StrictInt, BeforeValidator(_json_integer)]


def _feature_index(value: object) -> object:
    """Neuronpedia's clients send a feature's index as a number or as a string of digits."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    value = _json_integer(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PydanticCustomError("feature_index", "must be an integer or a string of digits")


# (Constraints before a validator: after it, pydantic would not write them into the JSON schema.)
FeatureIndex = Annotated[
    int,
    Field(ge=0),
    BeforeValidator(_feature_index),
    WithJsonSchema({"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+$"}]}),
]


class RequestSchema(BaseModel):
    """A JSON body: fields under Neuronpedia's names (`validation_alias`), unknown fields ignored as Neuronpedia
    does."""

    model_config = ConfigDict(extra="ignore")


class ResponseSchema(BaseModel):
    """An answer: fields are built by their Python names and written under Neuronpedia's (`serialization_alias`,
    which the routers' by_alias=True applies). A plain `alias` would make type checkers ask for the JSON name
    when building one."""


class ErrorOut(ResponseSchema):
    error: str
    message: str


class ApiError(Exception):
    """A request the API refuses; becomes `{"error": code, "message": message}` with this status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# The `error` code of an HTTP error ninja raises itself (a body that is not JSON, a missing key).
HTTP_ERROR_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                    405: "method_not_allowed", 429: "too_many_requests"}


def json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


def error_responses(*statuses: int) -> dict[int, type[ErrorOut]]:
    """The `response=` entries documenting these error statuses; 400 and 405 apply to every endpoint."""
    return dict.fromkeys(sorted({400, 405, *statuses}), ErrorOut)


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """Pydantic's errors, as ninja reports them, in one message worded as the API always has: `'feature.index' must
    not be negative.`, `'modelId' is required.`, `The body must be a list.`"""
    sentences = [_error_sentence(error) for error in errors[:ERRORS_LISTED]]
    if len(errors) > ERRORS_LISTED:
        sentences.append(f"({len(errors) - ERRORS_LISTED} more.)")
    return " ".join(sentences)


def _error_sentence(error: Mapping[str, Any]) -> str:
    field, problem = _error_field(error["loc"]), _error_problem(error)
    if field != "body":
        return f"'{field}' {problem}."
    # A rule of the whole body (one of two fields, say) is a sentence of its own; a type error is the body's.
    return f"The body {problem}." if str(error.get("type")) in PROBLEMS else f"{problem[:1].upper()}{problem[1:]}."


def _error_field(location: Sequence[str | int]) -> str:
    """("body", <parameter>, "feature", "index") -> feature.index; (..., 0, "index") -> [0].index; the body itself
    is `body`. Ninja puts the source first, then for a body the view's (single) parameter's name."""
    source, *rest = location
    path = rest[1:] if source == "body" else rest
    field = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path).removeprefix(".")
    return field or str(source)


def _error_problem(error: Mapping[str, Any]) -> str:
    kind, context = str(error.get("type")), error.get("ctx", {})
    if kind == "greater_than_equal" and context.get("ge") == 0:
        return "must not be negative"
    if kind in PROBLEMS:
        return PROBLEMS[kind].format(**context)
    # Our own checks (PydanticCustomError) word theirs as the rest of a sentence already; pydantic's lose a capital.
    message = str(error.get("msg", "is not valid"))
    return message[:1].lower() + message[1:]
