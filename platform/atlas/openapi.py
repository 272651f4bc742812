"""The OpenAPI 3.1 document for /api/, written by hand; tests check that it names every API route."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest, JsonResponse

from atlas.explanations.models import DESCRIPTION_MAX_LENGTH
from atlas.features.api import FEATURES_PER_REQUEST, SEARCH_RESULTS_DEFAULT, SEARCH_RESULTS_MAX
from atlas.jsonapi import api_endpoint

_NAME = {"type": "string", "pattern": r"^[-\w.]+$"}
# Typed text for a live request: some non-blank character, within the server's limit.
_TEXT = {"type": "string", "minLength": 1, "maxLength": settings.ATLAS_LIVE_MAX_CHARACTERS, "pattern": r"\S"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    reasons = {400: "The body is not what the endpoint takes.", 401: "No API key, or one that is not valid.",
               404: "No such model, SAE, feature or run.", 405: "Another method than the endpoint takes.",
               502: "The worker failed to run the text.",
               503: "No worker answered within ATLAS_LIVE_TIMEOUT_SECONDS; start one with `make worker`."}
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
        "binContains": {"type": "number", "description": "share of active tokens in the interval"},
        "qualifyingTokenIndex": {"type": "integer",
                                 "description": "the token the example was chosen for (top: its peak)"}}},
    "Feature": {"type": "object", "required": ["modelId", "layer", "index", "activations", "explanations"],
                "properties": {
        "modelId": {"type": "string"}, "layer": {"type": "string"}, "index": {"type": "integer"},
        "hookName": {"type": "string"}, "maxActApprox": {"type": "number"}, "frac_nonzero": {"type": "number"},
        **{name: {"type": "array", "items": {"type": "string"}} for name in ("pos_str", "neg_str")},
        **{name: {"type": "array", "items": {"type": "number"}} for name in (
            "pos_values", "neg_values", "freq_hist_data_bar_heights", "freq_hist_data_bar_values",
            "logits_hist_data_bar_heights", "logits_hist_data_bar_values")},
        "activations": {"type": "array", "items": _ref("Activation")},
        "topkCosSimIndices": {"type": "array", "items": {"type": "integer"},
                              "description": "the SAE's features with the most similar decoder directions"},
        "topkCosSimValues": {"type": "array", "items": {"type": "number"},
                             "description": "their decoder cosine similarities, descending"},
        "explanations": {"type": "array", "items": _ref("Explanation")}}},
    "ActivationNew": {"type": "object", "required": ["feature", "customText"], "properties": {
        "feature": {"type": "object", "required": ["modelId", "source", "index"], "properties": {
            "modelId": _NAME, "source": {**_NAME, "description": "the SAE id; `layer` is taken too"},
            "index": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": "^[0-9]+$"}]}}},
        "customText": _TEXT}},
    "SearchAll": {"type": "object", "required": ["modelId", "text"],
                  "anyOf": [{"required": ["source"]}, {"required": ["sourceSet"]}], "properties": {
        "modelId": _NAME, "source": {**_NAME, "description": "one SAE"},
        "sourceSet": {**_NAME, "description": "every SAE of the model whose id ends in -<sourceSet>"},
        "text": _TEXT,
        "numResults": {"type": "integer", "minimum": 1, "maximum": SEARCH_RESULTS_MAX,
                       "default": SEARCH_RESULTS_DEFAULT}}},
    "TextActivation": {"type": "object", "required": ["modelId", "layer", "index", "tokens", "values", "maxValue"],
                       "properties": {
        "modelId": {"type": "string"}, "layer": {"type": "string"}, "index": {"type": "integer"},
        "tokens": {"type": "array", "items": {"type": "string"}, "description": "BOS first"},
        "values": {"type": "array", "items": {"type": "number"}},
        "maxValue": {"type": "number", "description": "the strongest activation on any token but BOS"},
        "maxValueTokenIndex": {"type": "integer"}, "minValue": {"type": "number"}}},
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
    "/api/activation/new": _post(
        "A feature's activation on each token of typed text, computed by a worker (public; waits for it).",
        _ref("ActivationNew"), _json(_ref("TextActivation"), "The text's tokens and the feature's values."),
        502, 503),
    "/api/search-all": _post(
        "The SAE's features that fire most strongly on typed text, strongest first, computed by a worker.",
        _ref("SearchAll"),
        _json({"type": "object", "required": ["result"], "properties": {
            "tokens": {"type": "array", "items": {"type": "string"}},
            "result": {"type": "array", "items": _ref("TextActivation")}}}, "The features, strongest first."),
        502, 503),
    "/api/runs/{runId}": {"get": {
        "summary": "A dashboard run's status and progress, and each shard's.",
        "parameters": [{"name": "runId", "in": "path", "required": True, "schema": {"type": "integer"}}],
        "responses": {"200": _json(_ref("Run"), "The run."), **_errors(404, 405)}}},
    "/api/upload": {"post": {
        "summary": "Upload an SAE (needs an x-api-key): the /upload/ page's fields and files; queues its run.",
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
            "type": "object", "required": ["language_model", "dataset"],
            "properties": {
                "language_model": {"type": "string", "description": "model id"},
                "dataset": {"type": "string", "description": "dataset id"},
                "cfg_file": {"type": "string", "format": "binary", "description": "cfg.json (or config.json)"},
                "weights_file": {"type": "string", "format": "binary",
                                 "description": "sae_weights.safetensors (or ae.pt)"},
                "archive": {"type": "string", "format": "binary", "description": "or one .zip / .tar.gz"},
                "hook_name": {"type": "string"}, "slug": {"type": "string"}, "description": {"type": "string"},
                "n_sequences": {"type": "integer"}, "top_k": {"type": "integer"},
                "context_before": {"type": "integer"}, "context_after": {"type": "integer"}}}}}},
        "responses": {
            "201": _json({"type": "object", "required": ["modelId", "layer", "runId"], "properties": {
                "modelId": {"type": "string"}, "layer": {"type": "string"}, "runId": {"type": "integer"},
                "run": {"type": "string"}, "url": {"type": "string"}}}, "Stored; its dashboards are queued."),
            **_errors(400, 401, 405)},
        "security": [{"apiKey": []}]}},
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


@api_endpoint(("GET", "HEAD"))
def openapi_document(request: HttpRequest) -> JsonResponse:
    return JsonResponse(DOCUMENT)
