"""What every JSON API endpoint shares: the body parser, schema bases, the id and index types, errors as
{"error", "message"}."""

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from django.http import HttpRequest, JsonResponse
from ninja.parser import Parser
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)
from pydantic_core import PydanticCustomError

# Arrays and objects nest at most this deep in a body; the API's own bodies nest three deep. Deeper bodies are
# refused before json.loads, whose recursion they would exhaust.
JSON_MAX_DEPTH = 64
# Integers in a body fit in 64 bits (Postgres bigint): a literal of more digits is never converted (int() is
# quadratic in its length, and refuses more than 4,300), and a field that gets one refuses it.
JSON_MAX_INTEGER_DIGITS = 19
# Postgres integer columns (feature indices) and bigint ones (ids) hold these.
POSTGRES_INTEGER_MAX = 2**31 - 1
POSTGRES_BIGINT_MAX = 2**63 - 1
# Model and SAE ids as they appear in addresses (`gpt2-small`, `5-res-jb`); anything else cannot name one. Their
# columns are SlugField(max_length=100).
IDENTIFIER_PATTERN = r"^[-\w.]+$"
IDENTIFIER_MAX_LENGTH = 100
Identifier = Annotated[str, StringConstraints(pattern=IDENTIFIER_PATTERN, max_length=IDENTIFIER_MAX_LENGTH)]
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
    "string_too_long": "must be at most {max_length} characters long",
    "string_unicode": "holds a lone UTF-16 surrogate (\\ud800-\\udfff); send each one paired, or the character "
                      "itself",
    "int_from_float": "must be an integer",
}


@dataclass(frozen=True)
class LongInteger:
    """An integer literal of more than JSON_MAX_INTEGER_DIGITS digits, as the parser leaves it: unconverted, so that
    an ignored field costs nothing and an integer field can refuse it by name."""

    digits: int


def _json_integer(value: object) -> object:
    """A whole number written with a fraction (3.0) is an integer to JSON Schema, and to JavaScript clients."""
    if isinstance(value, LongInteger):
        raise PydanticCustomError("integer_digits", "is an integer of {digits} digits; integers here fit in 64 bits "
                                                    "({most} digits at most)",
                                  {"digits": value.digits, "most": JSON_MAX_INTEGER_DIGITS})
    return int(value) if isinstance(value, float) and value.is_integer() else value


# JSON's integers; strict, so that neither a bool (an int to Python) nor a string passes for one.
JsonInteger = Annotated[StrictInt, BeforeValidator(_json_integer)]


def _json_number(value: object) -> object:
    """A JSON number, integer or not, as a float; never a bool or a string of digits."""
    if isinstance(value, LongInteger):
        raise PydanticCustomError("number_digits", "is an integer of {digits} digits; write a number that large "
                                                   "with an exponent (1e30)", {"digits": value.digits})
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("json_number", "must be a number")
    return float(value)


# A JSON number, integer or not, as a float.
JsonNumber = Annotated[float, BeforeValidator(_json_number)]


def _feature_index(value: object) -> object:
    """Neuronpedia's clients send a feature's index as a number or as a string of digits (converted only when short
    enough to be one: int() is quadratic in the digits)."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        if len(value) > JSON_MAX_INTEGER_DIGITS:
            raise PydanticCustomError("feature_index_digits", "must be at most {le}", {"le": POSTGRES_INTEGER_MAX})
        return int(value)
    value = _json_integer(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PydanticCustomError("feature_index", "must be an integer or a string of digits")


# (Constraints before a validator: after it, pydantic would not write them into the JSON schema.)
FeatureIndex = Annotated[
    int,
    Field(ge=0, le=POSTGRES_INTEGER_MAX),
    BeforeValidator(_feature_index),
    WithJsonSchema({"oneOf": [{"type": "integer", "minimum": 0, "maximum": POSTGRES_INTEGER_MAX},
                              # Strings of up to 9 digits are all indices a column holds; the document
                              # promises no more (JSON Schema bounds no string's value).
                              {"type": "string", "pattern": "^[0-9]{1,9}$"}]}),
]


# The document's pattern for strings that may hold anything but NUL (the surrogates JSON Schema cannot exclude).
NO_NUL_PATTERN = "^[^\\u0000]*$"
# Characters no stored or queued string may hold: NUL (Postgres text refuses it) and the UTF-16 surrogates, which a
# JSON escape ("\\ud800") can leave unpaired and which UTF-8 cannot encode.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _storable_text(value: object) -> object:
    """A string's unstorable characters are refused here, naming its field, rather than by the database."""
    if isinstance(value, str) and (found := _UNSTORABLE.search(value)):
        if found.group() == "\x00":
            raise PydanticCustomError("string_nul", "holds a NUL character (\\u0000); remove it")
        raise PydanticCustomError("string_surrogate", "holds a lone UTF-16 surrogate (\\u{code}); send it paired, "
                                                      "or the character itself", {"code": f"{ord(found.group()):04x}"})
    return value


def null_means(default: object) -> BeforeValidator:
    """Null asks for the default, as a field left out does."""
    return BeforeValidator(lambda wanted: default if wanted is None else wanted)


# A string inside a list or nested value, which RequestSchema's check of its own fields does not reach.
StorableText = Annotated[str, BeforeValidator(_storable_text)]
StorableIdentifier = Annotated[Identifier, BeforeValidator(_storable_text)]


class RequestSchema(BaseModel):
    """A JSON body: fields under Neuronpedia's names (`validation_alias`), unknown fields ignored as Neuronpedia
    does. Every string field is checked for NUL and lone surrogates before anything else."""

    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _storable(cls, value: object) -> object:
        return _storable_text(value)


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
                    405: "method_not_allowed", 413: "too_large", 429: "too_many_requests", 500: "server_error"}


def json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


class BodyRefused(ValueError):
    """A body the parser refuses before or while decoding it; the message is a whole sentence for the client."""


# What json_depth reads of a body: brackets and the quotes around strings, whose brackets nest nothing.
_NOT_MARKS = bytes(byte for byte in range(256) if byte not in b'[]{}"')
_NESTING_STEP = np.zeros(256, dtype=np.int8)
_NESTING_STEP[list(b"[{")], _NESTING_STEP[list(b"]}")] = 1, -1


def json_depth(body: bytes) -> int:
    """How deep the body's arrays and objects nest, in linear passes without recursion: with escaped backslashes
    and quotes dropped, every other quote opens a string; each bracket outside one steps the depth up or down."""
    for escape in (b"\\\\", b'\\"'):
        body = body.replace(escape, b"")
    marks = np.frombuffer(body.translate(None, _NOT_MARKS), dtype=np.uint8)
    in_string = np.logical_xor.accumulate(marks == ord('"'))
    steps = np.where(in_string, 0, _NESTING_STEP[marks]).astype(np.int8)
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Refuses a key given twice in one object: parsers disagree on which one wins, so no client should rely on it."""
    found: dict[str, Any] = {}
    for key, value in pairs:
        if key in found:
            raise BodyRefused(f"The body gives the key '{key}' twice in one object; send each key once.")
        found[key] = value
    return found


def _json_int(literal: str) -> int | LongInteger:
    digits = len(literal.lstrip("-"))
    return LongInteger(digits) if digits > JSON_MAX_INTEGER_DIGITS else int(literal)


def _json_float(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise BodyRefused(f"The body holds the number {literal}, too large for a 64-bit float; send a smaller one.")
    return value


def _json_constant(name: str) -> float:
    raise BodyRefused(f"The body holds {name}, which is not JSON; send a number or null.")


def json_parse(body: bytes) -> Any:
    """A request body as JSON (RFC 8259: UTF-8), nested at most JSON_MAX_DEPTH deep, each key once per object,
    finite numbers; integers of more than 64 bits are left as LongInteger."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyRefused(f"The body is not UTF-8 (byte {error.start}); send JSON encoded as UTF-8.") from None
    depth = json_depth(body)
    if depth > JSON_MAX_DEPTH:
        raise BodyRefused(f"The body nests arrays and objects {depth} deep; the API takes at most {JSON_MAX_DEPTH}.")
    return json.loads(text, object_pairs_hook=_json_object, parse_int=_json_int, parse_float=_json_float,
                      parse_constant=_json_constant)


class JsonParser(Parser):
    """Ninja's parser, but with json_parse's limits: a hostile body is a 400 that says what was wrong."""

    def parse_body(self, request: HttpRequest) -> Any:
        return json_parse(request.body)


def error_responses(*statuses: int) -> dict[int, type[ErrorOut]]:
    """The `response=` entries documenting these error statuses; 400 and 405 apply to every endpoint."""
    return dict.fromkeys(sorted({400, 405, *statuses}), ErrorOut)


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """Pydantic's errors, as ninja reports them, in one message worded as the API always has: `'feature.index' must
    not be negative.`, `'modelId' is required.`, `The body must be a list.`"""
    errors = _without_none_members(errors)
    sentences = [_error_sentence(error) for error in errors[:ERRORS_LISTED]]
    if len(errors) > ERRORS_LISTED:
        sentences.append(f"({len(errors) - ERRORS_LISTED} more.)")
    return " ".join(sentences)


def _without_none_members(errors: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """A wrong value for an optional field (`X | None`) fails both members of the union, each reported under its tag
    (source.none, source.constrained-str): the None member's error goes, and the other's tag, so the field is
    named as the client wrote it."""
    optional = [tuple(error["loc"][:-1]) for error in errors if error.get("type") == "none_required"]
    kept: list[Mapping[str, Any]] = []
    for error in errors:
        location = tuple(error["loc"])
        if error.get("type") == "none_required" and location[:-1] in optional:
            continue
        field = next((field for field in optional if location[:len(field)] == field and len(location) > len(field)),
                     None)
        kept.append(error if field is None else {**error, "loc": (*field, *location[len(field) + 1:])})
    return kept


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
