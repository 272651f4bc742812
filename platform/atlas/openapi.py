"""The OpenAPI 3.1 document for /api/, written by hand; tests check that it names every API route."""

from typing import Any

from django.http import HttpRequest, JsonResponse

from atlas.explanations.models import DESCRIPTION_MAX_LENGTH
from atlas.features.api import FEATURES_PER_REQUEST

_NAME = {"type": "string", "pattern": r"^[-\w.]+$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {400: "The body is not what the endpoint takes.", 401: "No API key, or one that is not valid.",
               404: "No such model, SAE, feature or run.", 405: "Another method than the endpoint takes."}
    return {str(status): _json(_ref("Error"), reasons[status]) for status in statuses}


def _post(summary: str, body: dict[str, Any], ok: dict[str, Any], *errors: int, status: str = "200") -> dict[str, Any]:
    return {"post": {"summary": summary, "requestBody": {"required": True, **_json(body, summary)},
                     "responses": {status: ok, **_errors(400, 404, 405, *errors)}}}


_SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": {"type": "string"}, "message": {"type": "string"}}},
    "FeatureLookup": {"type": "object", "required": ["modelId", "layer", "index"], "properties": {
        "modelId": _NAME, "layer": {**_NAME, "description": "the SAE id, e.g. 5-res-demo"},
        "index": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+$"}]}}},
    "FeaturesOffset": {"type": "object", "required": ["modelId", "layer", "offset"], "properties": {
        "modelId": _NAME, "layer": _NAME, "offset": {"type": "integer", "minimum": 0}}},
    "ExplanationNew": {"type": "object", "required": ["modelId", "layer", "index", "description"], "properties": {
        "modelId": _NAME, "layer": _NAME,
        "index": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+$"}]},
        "description": {"type": "string", "minLength": 1, "maxLength": DESCRIPTION_MAX_LENGTH}}},
    "Explanation": {"type": "object", "required": ["id", "modelId", "layer", "index", "description"], "properties": {
        "id": {"type": "string"}, "modelId": {"type": "string"}, "layer": {"type": "string"},
        "index": {"type": "integer"}, "description": {"type": "string"},
        "authorUsername": {"type": ["string", "null"]}, "createdAt": {"type": "string", "format": "date-time"}}},
    "Activation": {"type": "object", "properties": {
        "tokens": {"type": "array", "items": {"type": "string"}},
        "values": {"type": "array", "items": {"type": "number"}},
        "maxValue": {"type": "number"}, "maxValueTokenIndex": {"type": "integer"}, "minValue": {"type": "number"},
        "binMin": {"type": "number", "description": "-1 for top examples"}, "binMax": {"type": "number"},
        "binContains": {"type": "number", "description": "share of active tokens in the interval"}}},
    "Feature": {"type": "object", "required": ["modelId", "layer", "index", "activations", "explanations"],
                "properties": {
        "modelId": {"type": "string"}, "layer": {"type": "string"}, "index": {"type": "integer"},
        "hookName": {"type": "string"}, "maxActApprox": {"type": "number"}, "frac_nonzero": {"type": "number"},
        **{name: {"type": "array", "items": {"type": "string"}} for name in ("pos_str", "neg_str")},
        **{name: {"type": "array", "items": {"type": "number"}} for name in (
            "pos_values", "neg_values", "freq_hist_data_bar_heights", "freq_hist_data_bar_values",
            "logits_hist_data_bar_heights", "logits_hist_data_bar_values")},
        "activations": {"type": "array", "items": _ref("Activation")},
        "explanations": {"type": "array", "items": _ref("Explanation")}}},
    "Run": {"type": "object", "required": ["id", "status", "progressDone", "progressTotal", "shards"],
            "additionalProperties": True, "properties": {
        "id": {"type": "integer"}, "status": {"enum": ["queued", "running", "succeeded", "failed"]},
        "phase": {"type": "string"}, "progressDone": {"type": "integer"}, "progressTotal": {"type": "integer"},
        "tokensTotal": {"type": "integer"}, "device": {"type": "string"}, "error": {"type": "string"},
        "shards": {"type": "array", "items": {"type": "object"}}}},
}

_PATHS: dict[str, Any] = {
    "/api/feature/{modelId}/{layer}/{index}": {"get": {
        "summary": "One feature's dashboard in Neuronpedia's field names, with its explanations.",
        "parameters": [{"name": "modelId", "in": "path", "required": True, "schema": _NAME},
                       {"name": "layer", "in": "path", "required": True, "schema": _NAME},
                       {"name": "index", "in": "path", "required": True,
                        "schema": {"type": "integer", "minimum": 0}}],
        "responses": {"200": _json(_ref("Feature"), "The feature."), **_errors(404, 405)}}},
    "/api/features": _post(
        f"Several features at once (1 to {FEATURES_PER_REQUEST}), in the order asked.",
        {"type": "array", "minItems": 1, "maxItems": FEATURES_PER_REQUEST, "items": _ref("FeatureLookup")},
        _json({"type": "array", "items": _ref("Feature")}, "The features.")),
    "/api/features-offset": _post(
        "25 features of an SAE from index `offset` on; an offset past the end gives an empty list.",
        _ref("FeaturesOffset"), _json({"type": "array", "items": _ref("Feature")}, "The features.")),
    "/api/explanation/new": {"post": {
        **_post("Add an explanation to a feature (needs an x-api-key).", _ref("ExplanationNew"),
                _json({"type": "object", "properties": {"explanation": _ref("Explanation")}}, "Stored."),
                401, status="201")["post"],
        "security": [{"apiKey": []}]}},
    "/api/runs/{runId}": {"get": {
        "summary": "A dashboard run's status and progress, and each shard's.",
        "parameters": [{"name": "runId", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "responses": {"200": _json(_ref("Run"), "The run."), **_errors(404, 405)}}},
    "/api/openapi.json": {"get": {"summary": "This document.",
                                  "responses": {"200": {"description": "OpenAPI 3.1 document."}}}},
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "SAE Atlas API", "version": "1",
             "description": "Neuronpedia-compatible reads (public) and writes (x-api-key, from /account/). "
                            "Errors are JSON {error, message} with a 4xx status. Paths take a trailing slash too."},
    "paths": _PATHS,
    "components": {"schemas": _SCHEMAS,
                   "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
}


def openapi_document(request: HttpRequest) -> JsonResponse:
    return JsonResponse(DOCUMENT)
