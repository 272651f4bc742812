"""Hostile input to every route of the generated OpenAPI document (so a new route is covered as it is added):
bodies nested 100,000 deep, NUL and lone surrogates in each string field, 5,000-digit integers, wrong types, huge
strings, duplicate keys, oversized bodies. Each is a 4xx in JSON that says what was wrong, never a 5xx."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.db import transaction
from django.http import HttpResponse
from django.test import Client, override_settings

from atlas.accounts.services import api_key_create
from atlas.api import openapi_document
from atlas.jsonapi import JSON_MAX_DEPTH
from tests import factories

DOCUMENT = openapi_document()
SCHEMAS = DOCUMENT["components"]["schemas"]
# The published feature's names, for fields of these names, so that a body gets as far as it can.
KNOWN_VALUES: dict[str, Any] = {"modelId": "tiny-llama", "layer": "0-res-8", "source": "0-res-8", "index": 3,
                                "runId": 1, "offset": 0, "numResults": 1, "text": "hello",
                                "customText": "hello", "description": "opening words"}
Path = tuple[str | int, ...]
ROUTES = [(path, method.upper(), operation) for path, operations in DOCUMENT["paths"].items()
          for method, operation in operations.items()]
JSON_ROUTES = [(path, method, operation) for path, method, operation in ROUTES
               if "application/json" in operation.get("requestBody", {}).get("content", {})]
GET_ROUTES = [(path, operation) for path, method, operation in ROUTES if method == "GET"]
HUGE_INTEGER = "9" * 5000
MEGABYTE_STRING = "x" * 2**20


def _resolved(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return _resolved(SCHEMAS[schema["$ref"].rsplit("/", 1)[1]])
    return schema


def example(schema: dict[str, Any], name: str | None = None) -> Any:
    """A body its schema takes, with the published feature's names: required fields (and the first of any
    one-of-these-fields rule), plus optional ones of a known name."""
    schema = _resolved(schema)
    if name in KNOWN_VALUES:
        return KNOWN_VALUES[name]
    if "oneOf" in schema:
        return example(schema["oneOf"][0], name)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        wanted = [*schema.get("required", []), *schema.get("anyOf", [{}])[0].get("required", [])]
        wanted += [field for field in schema.get("properties", {}) if field in KNOWN_VALUES]
        return {field: example(schema["properties"][field], field) for field in dict.fromkeys(wanted)}
    if kind == "array":
        return [example(schema["items"])]
    return {"integer": schema.get("minimum", 0), "number": 0.0, "boolean": False}.get(str(kind), "x")


def leaves(value: Any, at: Path = ()) -> Iterator[tuple[Path, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, (*at, key))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from leaves(item, (*at, position))
    else:
        yield at, value


def field_name(at: Path) -> str:
    """As the API's messages name a field: feature.index, [0].index."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in at).removeprefix(".")


def replaced(value: Any, at: Path, new: Any) -> Any:
    if not at:
        return new
    copy = json.loads(json.dumps(value))
    target = copy
    for part in at[:-1]:
        target = target[part]
    target[at[-1]] = new
    return copy


def body_example(operation: dict[str, Any]) -> Any:
    return example(operation["requestBody"]["content"]["application/json"]["schema"])


def concrete(path: str, operation: dict[str, Any], **overrides: str) -> str:
    """The path with each parameter filled in (a known value, or an override, written as it is into the URL)."""
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path":
            name = parameter["name"]
            value = overrides.get(name, str(example(parameter["schema"], name)))
            path = path.replace(f"{{{name}}}", value)
    return path


def _string_cases() -> list[tuple[str, str, str]]:
    """(what, the field's JSON value as raw text, a word the message must hold)."""
    return [("nul", json.dumps("a\x00b"), "NUL"), ("lone surrogate", '"a\\ud800b"', "surrogate"),
            ("megabyte", json.dumps(MEGABYTE_STRING), ""), ("number", "12", "string"),
            ("list", '["a"]', "string"), ("object", '{"a": 1}', "string")]


def _integer_cases() -> list[tuple[str, str, str]]:
    return [("5000 digits", HUGE_INTEGER, "5000 digits"), ("30 digits", "9" * 30, "30 digits"),
            ("2**63", str(2**63), "at most"), ("-2**63", str(-(2**63)), ""), ("fraction", "1.5", "integer"),
            ("exponent", "1e400", "too large"), ("bool", "true", "integer"), ("list", "[1]", "integer"),
            ("digit string of 5000", json.dumps(HUGE_INTEGER), "")]


def _number_cases() -> list[tuple[str, str, str]]:
    """A float field's: any finite JSON number is one, so only what is not a number, or not a finite one."""
    return [(what, raw, "number" if word == "integer" else word) for what, raw, word in _integer_cases()
            if what not in {"2**63", "-2**63", "fraction"}]


def _field_cases() -> Iterator[Any]:
    for path, method, operation in JSON_ROUTES:
        body = body_example(operation)
        for at, value in leaves(body):
            cases = (_string_cases() if isinstance(value, str) else
                     _number_cases() if isinstance(value, float) else _integer_cases())
            for what, raw, word in cases:
                marker = "__HOSTILE__"
                text = json.dumps(replaced(body, at, marker)).replace(json.dumps(marker), raw)
                yield pytest.param(path, method, operation, text, field_name(at), word,
                                   id=f"{method} {path} {field_name(at)} {what}")


def _body_cases() -> Iterator[Any]:
    deep = {"arrays 1000 deep": "[" * 1000 + "]" * 1000, "arrays 100000 deep": "[" * 100_000 + "]" * 100_000,
            "objects 100000 deep": '{"a":' * 100_000 + "1" + "}" * 100_000,
            f"arrays {JSON_MAX_DEPTH + 1} deep": "[" * (JSON_MAX_DEPTH + 1) + "]" * (JSON_MAX_DEPTH + 1),
            "unclosed 100000 deep": "[" * 100_000}
    for path, method, operation in JSON_ROUTES:
        body = body_example(operation)
        whole = {**deep, "NaN": "NaN", "Infinity": "[Infinity]", "a string": '"x"', "null": "null",
                 "a number": "3", "a 5000-digit number": HUGE_INTEGER}
        if isinstance(body, dict):
            first = next(iter(body))
            raw = json.dumps(body)
            whole |= {"a key twice": raw[:-1] + f", {json.dumps(first)}: {json.dumps(body[first])}}}",
                      "deep in an unknown field": raw[:-1] + ', "extra": ' + "[" * 1000 + "]" * 1000 + "}",
                      "a list for an object": "[" + raw + "]"}
        else:
            whole |= {"an object for a list": json.dumps(body[0])}
        for what, text in whole.items():
            word = "deep" if "deep" in what and "unclosed" not in what else ""
            yield pytest.param(path, method, operation, text, word, id=f"{method} {path} {what}")


@pytest.fixture(scope="module")
def site(django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The published feature, made once for the module's few hundred requests, in a transaction rolled back at its
    end (each test's own transaction is a savepoint inside it)."""
    with django_db_blocker.unblock(), override_settings(MEDIA_ROOT=tmp_path_factory.mktemp("media")), \
            transaction.atomic():
        language_model = factories.language_model_make()
        factories.published_feature_make(language_model, factories.dataset_make(language_model))
        yield
        transaction.set_rollback(True)


@pytest.fixture
def api_client(site: None, db: None, settings: Any) -> Client:
    """A key holder's client; a live request that got past validation would wait a second, then be a 503."""
    settings.ATLAS_LIVE_TIMEOUT_SECONDS = 1.0
    secret = api_key_create(user=factories.user_make(), name="hostile").secret
    return Client(headers={"x-api-key": secret})


def refused(response: HttpResponse, *statuses: int) -> str:
    """The answer is one of these statuses, in JSON {"error", "message"}; its message."""
    assert response["Content-Type"] == "application/json", response.content[:200]
    answer = response.json()
    assert response.status_code in statuses, answer
    assert set(answer) == {"error", "message"} and answer["message"]
    return str(answer["message"])


def test_every_route_is_covered() -> None:
    assert len(JSON_ROUTES) >= 5 and GET_ROUTES
    assert all(leaves(body_example(operation)) for _, _, operation in JSON_ROUTES)


@pytest.mark.parametrize(("path", "method", "operation", "text", "field", "word"), list(_field_cases()))
def test_a_hostile_value_in_any_field_is_a_400_naming_it(api_client: Client, path: str, method: str,
                                                         operation: dict[str, Any], text: str, field: str,
                                                         word: str) -> None:
    response = api_client.generic(method, concrete(path, operation), text, content_type="application/json")
    message = refused(response, 400)
    assert word in message
    # The parser refuses infinite numbers before any field is known; every other refusal names the field.
    if word != "too large":
        assert field.rsplit(".", 1)[-1].lower() in message.lower()


@pytest.mark.parametrize(("path", "method", "operation", "text", "word"), list(_body_cases()))
def test_a_hostile_body_is_a_400(api_client: Client, path: str, method: str, operation: dict[str, Any],
                                 text: str, word: str) -> None:
    response = api_client.generic(method, concrete(path, operation), text, content_type="application/json")
    assert word in refused(response, 400)


@pytest.mark.parametrize(("path", "method", "operation"), [route[:3] for route in JSON_ROUTES],
                         ids=[f"{method} {path}" for path, method, _ in JSON_ROUTES])
def test_a_body_over_the_limit_is_a_413_naming_it(api_client: Client, path: str, method: str,
                                                  operation: dict[str, Any]) -> None:
    text = json.dumps(MEGABYTE_STRING * (django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 2**20 + 1))
    response = api_client.generic(method, concrete(path, operation), text, content_type="application/json")
    assert "DATA_UPLOAD_MAX_MEMORY_SIZE" in refused(response, 413)


def _path_cases() -> Iterator[Any]:
    for path, method, operation in ROUTES:
        for parameter in operation.get("parameters", []):
            if parameter["in"] != "path":
                continue
            name, kind = parameter["name"], parameter["schema"].get("type")
            values = ({"5000 digits": HUGE_INTEGER, "30 digits": "9" * 30, "2**63": str(2**63), "-1": "-1"}
                      if kind == "integer" else
                      {"nul": "a%00b", "lone surrogate": "a%ED%A0%80b", "10000 characters": "x" * 10_000})
            for what, value in values.items():
                yield pytest.param(concrete(path, operation, **{name: value}), method,
                                   id=f"{method} {path} {name} {what}")


@pytest.mark.parametrize(("path", "method"), list(_path_cases()))
def test_a_hostile_path_parameter_is_a_json_4xx(api_client: Client, path: str, method: str) -> None:
    refused(api_client.generic(method, path), 400, 404)


@pytest.mark.parametrize(("path", "operation"), GET_ROUTES, ids=[path for path, _ in GET_ROUTES])
def test_a_nul_in_the_query_string_is_a_400(api_client: Client, path: str, operation: dict[str, Any]) -> None:
    assert "NUL" in refused(api_client.get(f"{concrete(path, operation)}?offset=a%00b"), 400)


@pytest.mark.parametrize(("path", "operation"), GET_ROUTES, ids=[path for path, _ in GET_ROUTES])
def test_a_5000_digit_query_parameter_is_no_server_error(api_client: Client, path: str,
                                                         operation: dict[str, Any]) -> None:
    response = api_client.get(f"{concrete(path, operation)}?offset={HUGE_INTEGER}&index={HUGE_INTEGER}")
    assert response.status_code < 500 and response["Content-Type"] == "application/json"


@pytest.mark.parametrize(("fields", "word"), [({"language_model": "tiny\x00llama"}, "language_model"),
                                              ({"language_model": "a" * 2**20}, "language_model")])
def test_a_hostile_upload_form_is_a_400_naming_the_field(api_client: Client, fields: dict[str, str],
                                                         word: str) -> None:
    assert word in refused(api_client.post("/api/upload", fields), 400)


def test_a_broken_multipart_body_is_a_json_400(api_client: Client) -> None:
    response = api_client.generic("POST", "/api/upload", b"--nope\r\n", content_type="multipart/form-data")
    refused(response, 400)


def test_the_search_page_refuses_a_nul(db: None) -> None:
    response = Client().get("/search?q=%00")
    assert response.status_code == 400 and "NUL" in response.content.decode()


@pytest.mark.parametrize(("path", "operation"), GET_ROUTES, ids=[path for path, _ in GET_ROUTES])
def test_head_answers_as_get_without_the_body(api_client: Client, path: str, operation: dict[str, Any]) -> None:
    get, head = api_client.get(concrete(path, operation)), api_client.head(concrete(path, operation))
    assert head.status_code == get.status_code and head.content == b""
    assert head["Content-Type"] == get["Content-Type"] == "application/json"
    assert head["Content-Length"] == str(len(get.content))


def test_head_on_the_document_answers_as_get(db: None) -> None:
    head = Client().head("/api/openapi.json")
    assert head.status_code == 200 and head.content == b"" and head["Content-Type"] == "application/json"


def test_an_unexpected_error_is_a_json_500_saying_what_to_do(api_client: Client, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr("atlas.features.api.feature_detail", broken)
    client = Client(raise_request_exception=False)
    response = client.get("/api/feature/tiny-llama/0-res-8/3")
    assert (response.status_code, response.json()["error"]) == (500, "server_error")
    assert "admin" in response.json()["message"] and "the disk is on fire" not in response.json()["message"]
    assert "the disk is on fire" in caplog.text and "Traceback" in caplog.text


@pytest.mark.parametrize("host", ["evil.example", "a b"])
def test_a_host_outside_allowed_hosts_is_a_json_400(db: None, host: str) -> None:
    response = Client(raise_request_exception=False).get("/api/runs/1", headers={"host": host})
    assert "ALLOWED_HOSTS" in refused(response, 400)


def test_a_long_integer_in_an_unknown_field_is_ignored_unread(api_client: Client) -> None:
    text = '{"modelId": "tiny-llama", "layer": "0-res-8", "offset": 0, "extra": ' + HUGE_INTEGER + "}"
    response = api_client.post("/api/features-offset", text, content_type="application/json")
    assert response.status_code == 200 and response.json()[0]["index"] == 0
