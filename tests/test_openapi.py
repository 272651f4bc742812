"""/api/openapi.json is generated from the routers: every endpoint, Neuronpedia's field names, errors, the key."""

import re
from typing import Any

import pytest
from django.test import Client

from atlas.api import openapi_document
from atlas.api import urlpatterns as api_urlpatterns

# What ninja serves beside the endpoints: the document itself, the docs page and the API's root.
NOT_ENDPOINTS = {"openapi-json", "openapi-view", "api-root"}
FEATURE_FIELDS = {
    "modelId", "layer", "index", "hookName", "maxActApprox", "frac_nonzero", "pos_str", "pos_values", "neg_str",
    "neg_values", "freq_hist_data_bar_heights", "freq_hist_data_bar_values", "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values", "activations", "topkCosSimIndices", "topkCosSimValues", "explanations",
}
ACTIVATION_FIELDS = {
    "tokens", "values", "maxValue", "maxValueTokenIndex", "minValue", "binMin", "binMax", "binContains",
    "qualifyingTokenIndex",
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return openapi_document()


def schema_fields(document: dict[str, Any], name: str) -> set[str]:
    return set(document["components"]["schemas"][name]["properties"])


def openapi_path(route: str) -> str:
    """feature/<modelId>/<layer>/<int:index> -> /api/feature/{modelId}/{layer}/{index}"""
    return "/api/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_every_api_route_is_in_the_document(document: dict[str, Any]) -> None:
    routes = {openapi_path(str(pattern.pattern)) for pattern in api_urlpatterns
              if pattern.name and pattern.name not in NOT_ENDPOINTS}
    assert routes == set(document["paths"])
    assert len(routes) == 30


def test_features_carry_neuronpedias_field_names(document: dict[str, Any]) -> None:
    assert schema_fields(document, "FeatureOut") == FEATURE_FIELDS
    assert schema_fields(document, "ActivationOut") == ACTIVATION_FIELDS
    assert schema_fields(document, "ExplanationOut") == {
        "id", "modelId", "layer", "index", "description", "authorUsername", "createdAt"}
    assert schema_fields(document, "TextActivationOut") == {
        "modelId", "layer", "index", "tokens", "values", "maxValue", "maxValueTokenIndex", "minValue"}


def test_runs_carry_camel_case_names(document: dict[str, Any]) -> None:
    assert {"progressDone", "progressTotal", "tokensTotal", "shards", "metrics"} <= schema_fields(document, "RunOut")
    assert {"firstSequence", "progressDone"} <= schema_fields(document, "ShardOut")
    assert {"explainedVariance", "ceLossScore", "klDivZeroAblation", "deadFeatures", "denseThreshold"} <= (
        schema_fields(document, "RunMetricsOut"))
    assert schema_fields(document, "UploadOut") == {"modelId", "layer", "runId", "run", "url"}


def test_request_bodies_take_neuronpedias_names(document: dict[str, Any]) -> None:
    assert schema_fields(document, "FeatureLookup") == {"modelId", "layer", "index"}
    assert schema_fields(document, "ActivationNew") == {"feature", "customText"}
    assert schema_fields(document, "LiveFeature") == {"modelId", "source", "index"}
    assert schema_fields(document, "SearchAll") == {"modelId", "source", "sourceSet", "text", "numResults"}
    assert schema_fields(document, "ExplanationNew") == {"modelId", "layer", "index", "description"}
    assert schema_fields(document, "VectorNew") == {
        "modelId", "layerNumber", "hookType", "vector", "vectorDefaultSteerStrength", "vectorLabel"}
    assert schema_fields(document, "VectorAddress") == {"modelId", "source", "index"}


def test_an_index_is_a_number_or_a_string_of_digits(document: dict[str, Any]) -> None:
    index = document["components"]["schemas"]["FeatureLookup"]["properties"]["index"]
    assert index["oneOf"] == [{"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                              {"type": "string", "pattern": "^[0-9]{1,9}$"}]


def test_the_upload_body_is_the_upload_forms_fields(document: dict[str, Any]) -> None:
    body = document["paths"]["/api/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["required"] == ["language_model", "dataset"]
    assert body["properties"]["weights_file"]["format"] == "binary"
    assert body["properties"]["top_k"] == {"type": "integer", "description": "Top examples", "minimum": 1,
                                        "maximum": 200}


def test_writes_need_the_api_key_and_reads_do_not(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["ApiKeyAuth"] == {
        "type": "apiKey", "in": "header", "name": "x-api-key"}
    secured = {path for path, operations in document["paths"].items()
               for operation in operations.values() if operation.get("security")}
    assert secured == {"/api/explanation/new", "/api/upload", "/api/runs/{runId}/cancel",
                       "/api/sae/{modelId}/{layer}/rerun", "/api/sae/{modelId}/{layer}", "/api/vector/new",
                       "/api/vector/delete", "/api/vector/list-owned", "/api/vector/dashboard", "/api/detector/new",
                       "/api/list/new", "/api/list/add-features", "/api/list/remove", "/api/list/list"}


def test_every_operation_documents_its_errors_as_json(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for operation in operations.values():
            errors = {status: response for status, response in operation["responses"].items()
                      if status.startswith(("4", "5"))}
            assert {"400", "405"} <= errors.keys(), path
            for response in errors.values():
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorOut"}


def test_document_is_served(db: None, document: dict[str, Any]) -> None:
    response = Client().get("/api/openapi.json")
    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.json()["openapi"].startswith("3.") and response.json()["paths"].keys() == document["paths"].keys()


def test_document_answers_only_get(db: None) -> None:
    response = Client().post("/api/openapi.json")
    assert (response.status_code, response.json()["error"], response["Allow"]) == (405, "method_not_allowed",
                                                                                   "GET, HEAD")


def test_docs_page_loads_swagger_from_this_server(db: None) -> None:
    page = Client().get("/api/docs").content.decode()
    scripts = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert "/static/ninja/swagger-ui-bundle.js" in scripts
    assert all(url.startswith("/static/") for url in scripts), scripts
    bundle = Client().get("/static/ninja/swagger-ui-bundle.js")
    assert bundle.status_code == 200
