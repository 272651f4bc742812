"""What every /api/ endpoint shares: trailing slashes, JSON 405s, schema errors as 400s naming the field, bodies
that are not JSON, NotFound as a 404 wherever it is raised, and JSON for any other /api/ path."""

import json
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client

from atlas.api import ERROR_ANSWERS, openapi_document
from atlas.errors import NotFound
from atlas.features.models import Feature

DOCUMENT = openapi_document()
# Each documented path with its parameters filled in: the published feature, and a run that does not exist.
CONCRETE_PATHS = {
    "/api/feature/{modelId}/{layer}/{index}": "/api/feature/tiny-llama/0-res-8/3",
    "/api/runs/{runId}": "/api/runs/999999",
    "/api/runs/{runId}/cancel": "/api/runs/999999/cancel",
    "/api/sae/{modelId}/{layer}/rerun": "/api/sae/tiny-llama/0-res-8/rerun",
    "/api/sae/{modelId}/{layer}": "/api/sae/tiny-llama/0-res-8",
    "/api/concept/search/{search_id}": "/api/concept/search/nosuchsearch",
    "/api/detector/{detector_id}": "/api/detector/nosuchdetector",
}
# POSTs that take no body: the owner's actions name what they act on in the path.
BODILESS = {"/api/upload", "/api/runs/999999/cancel", "/api/sae/tiny-llama/0-res-8/rerun", "/api/vector/list-owned",
            "/api/list/list"}
ENDPOINTS = [(CONCRETE_PATHS.get(path, path), method.upper())
             for path, operations in DOCUMENT["paths"].items() for method in operations]
JSON_BODY_ENDPOINTS = [path for path, method in ENDPOINTS if method == "POST" and path not in BODILESS]
OTHER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# POSTs with a body that refuse a request without an x-api-key before they read the body.
KEYED_WRITES = {"/api/explanation/new", "/api/vector/new", "/api/vector/delete", "/api/vector/dashboard",
                "/api/detector/new", "/api/list/new", "/api/list/add-features", "/api/list/remove"}


def send(path: str, method: str, body: str = "{}") -> HttpResponse:
    response: HttpResponse = Client().generic(method, path, body, content_type="application/json")
    return response


def post(path: str, body: Any) -> HttpResponse:
    return send(path, "POST", json.dumps(body))


def error(response: HttpResponse) -> tuple[int, str, str]:
    assert response["Content-Type"] == "application/json"
    body = response.json()
    return response.status_code, body["error"], body["message"]


def test_every_endpoint_is_checked() -> None:
    assert len(ENDPOINTS) == 30 and len(JSON_BODY_ENDPOINTS) == 20


@pytest.mark.parametrize(("path", "method"), ENDPOINTS)
def test_every_endpoint_takes_a_trailing_slash(published_feature: Feature, path: str, method: str) -> None:
    without, with_slash = send(path, method), send(f"{path}/", method)
    assert (with_slash.status_code, with_slash.content) == (without.status_code, without.content)
    assert "No API endpoint" not in without.content.decode()


@pytest.mark.parametrize(("path", "method"), ENDPOINTS)
def test_other_methods_are_a_json_405_naming_the_method(db: None, path: str, method: str) -> None:
    for other in set(OTHER_METHODS) - {method}:
        for asked in (path, f"{path}/"):
            response = send(asked, other)
            assert error(response) == (405, "method_not_allowed", f"Use {method} here."), (asked, other)
            assert response["Allow"] == method


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/api/features-offset", {"modelId": "tiny-llama", "layer": "0-res-8", "offset": True},
     "'offset' must be an integer."),
    ("/api/features-offset", {"modelId": "tiny-llama", "layer": "0-res-8", "offset": "2"},
     "'offset' must be an integer."),
    ("/api/features-offset", {"modelId": "tiny-llama", "layer": "0-res-8"}, "'offset' is required."),
    ("/api/features-offset", {"modelId": "tiny llama", "layer": "0-res-8", "offset": 0},
     r"'modelId' must match ^[-\w.]+$."),
    ("/api/features-offset", {"layer": 8, "offset": -1},
     "'modelId' is required. 'layer' must be a string. 'offset' must not be negative."),
    ("/api/features", {"modelId": "tiny-llama"}, "The body must be a list."),
    ("/api/features", [], "The body must hold at least 1 item(s)."),
    ("/api/features", [{"modelId": "tiny-llama", "layer": "0-res-8", "index": 1}] * 101,
     "The body must hold at most 100 items."),
    ("/api/features", [{"modelId": "tiny-llama", "layer": "0-res-8", "index": 1}, {"modelId": "tiny-llama"}],
     "'[1].layer' is required. '[1].index' is required."),
    ("/api/features", [{"modelId": "tiny-llama", "layer": "0-res-8", "index": "²"}],
     "'[0].index' must be an integer or a string of digits."),
    ("/api/activation/new", {"feature": {"modelId": "tiny-llama", "source": "0-res-8", "index": 1.5},
                             "customText": "hi"}, "'feature.index' must be an integer or a string of digits."),
    ("/api/search-all", {"modelId": "tiny-llama", "source": "0-res-8", "text": "hi", "numResults": "5"},
     "'numResults' must be an integer."),
])
def test_a_body_its_schema_refuses_is_a_400_naming_each_field(published_feature: Feature, path: str,
                                                              body: Any, message: str) -> None:
    assert error(post(path, body)) == (400, "bad_request", message)


def test_a_path_its_schema_refuses_is_a_400_naming_the_parameter(published_feature: Feature) -> None:
    response = Client().get("/api/feature/tiny%20llama/0-res-8/3")
    assert error(response) == (400, "bad_request", r"'modelId' must match ^[-\w.]+$.")


def test_a_long_list_of_problems_is_cut_short(published_feature: Feature) -> None:
    _, _, message = error(post("/api/features", [{}] * 4))
    assert message.endswith("'[1].modelId' is required. '[1].layer' is required. (7 more.)")


@pytest.mark.parametrize(("body", "index"), [("3", 3), (3.0, 3), ("03", 3)])
def test_an_index_may_be_a_string_of_digits_or_a_whole_number(published_feature: Feature, body: Any,
                                                              index: int) -> None:
    response = post("/api/features", [{"modelId": "tiny-llama", "layer": "0-res-8", "index": body}])
    assert response.status_code == 200 and response.json()[0]["index"] == index


@pytest.mark.parametrize("path", JSON_BODY_ENDPOINTS)
def test_a_body_that_is_not_json_is_a_400(published_feature: Feature, path: str) -> None:
    status, code, message = error(send(path, "POST", "{nope"))
    # Writes check the key first.
    assert (status, code) == ((401, "unauthorized") if path in KEYED_WRITES else (400, "bad_request"))
    if status == 400:
        assert message.startswith("The body is not JSON: Expecting property name")


@pytest.mark.parametrize("path", JSON_BODY_ENDPOINTS)
def test_an_empty_body_is_a_400_asking_for_one(published_feature: Feature, path: str) -> None:
    if path not in KEYED_WRITES:
        assert error(send(path, "POST", "")) == (400, "bad_request", "The body is required.")


def test_a_body_over_the_upload_limit_is_a_json_413(published_feature: Feature, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    status, code, message = error(post("/api/features", [{"modelId": "tiny-llama", "layer": "0-res-8", "index": 1}]
                                       * 10))
    assert (status, code) == (413, "too_large") and "DATA_UPLOAD_MAX_MEMORY_SIZE" in message


def test_not_found_is_answered_by_one_handler() -> None:
    assert ERROR_ANSWERS[NotFound] == (404, "not_found")


@pytest.mark.parametrize(("path", "method", "body", "message"), [
    ("/api/runs/999999", "GET", None, "No run 999999."),
    ("/api/feature/tiny-llama/0-res-8/99", "GET", None, "tiny-llama/0-res-8 has features 0 to 7; there is no "
                                                          "feature 99."),
    ("/api/features-offset", "POST", {"modelId": "nope", "layer": "0-res-8", "offset": 0},
     "No model 'nope'. The home page lists the models this server has."),
    ("/api/features", "POST", [{"modelId": "tiny-llama", "layer": "0-res-8", "index": 3},
                               {"modelId": "tiny-llama", "layer": "0-res-8", "index": 9}],
     "tiny-llama/0-res-8 has no published feature 9."),
])
def test_not_found_anywhere_is_a_json_404_with_its_message(published_feature: Feature, path: str,
                                                           method: str, body: Any, message: str) -> None:
    assert error(send(path, method, json.dumps(body))) == (404, "not_found", message)


def test_a_not_found_raised_in_a_selector_becomes_a_404(published_feature: Feature,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(*args: object) -> None:
        raise NotFound("Gone fishing.")

    monkeypatch.setattr("atlas.features.api.feature_detail", missing)
    assert error(Client().get("/api/feature/tiny-llama/0-res-8/3")) == (404, "not_found", "Gone fishing.")


@pytest.mark.parametrize("path", ["/api/", "/api/nothing-here", "/api/feature/tiny-llama/0-res-8", "/api/docs/x"])
def test_any_other_api_path_is_a_json_404_pointing_at_the_document(db: None, path: str) -> None:
    status, code, message = error(Client().get(path))
    assert (status, code) == (404, "not_found")
    assert message == f"No API endpoint {path}. /api/openapi.json lists the endpoints."


def test_the_feature_answer_is_json_of_its_schema(published_feature: Feature) -> None:
    response = Client().get("/api/feature/tiny-llama/0-res-8/3")
    assert response["Content-Type"] == "application/json"
    assert set(response.json()) == set(DOCUMENT["components"]["schemas"]["FeatureOut"]["properties"])
