"""POST /api/explanation/new: an x-api-key is required; errors are JSON with the right 4xx."""

import json
from typing import Any

import pytest
from django.test import Client

from atlas.accounts.services import api_key_create
from atlas.explanations.models import Explanation
from atlas.features.models import Feature
from tests import factories

NEW = {"modelId": "tiny-llama", "layer": "0-res-8", "index": 3, "description": "words about joy"}


def post(path: str, body: Any, **headers: str) -> Any:
    return Client().post(path, json.dumps(body), content_type="application/json", headers=headers)


@pytest.fixture
def api_key(db: None) -> str:
    return api_key_create(user=factories.user_make("carol")).secret


@pytest.mark.parametrize("path", ["/api/explanation/new", "/api/explanation/new/"])
def test_explanation_is_added_with_a_key(published_feature: Feature, api_key: str, path: str) -> None:
    response = post(path, NEW, **{"x-api-key": api_key})
    assert response.status_code == 201
    assert response.json()["explanation"]["authorUsername"] == "carol"
    assert Explanation.objects.get().description == "words about joy"
    assert Client().get("/api/feature/tiny-llama/0-res-8/3").json()["explanations"][0]["description"] == (
        "words about joy")


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "atlas_not-a-key"}])
def test_writes_without_a_valid_key_are_401(published_feature: Feature, headers: dict[str, str]) -> None:
    response = post("/api/explanation/new", NEW, **headers)
    assert (response.status_code, response.json()["error"]) == (401, "unauthorized")
    assert not Explanation.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({**NEW, "index": 99}, 400, "no feature 99"),
        ({**NEW, "description": " "}, 400, "Write a short description"),
        ({**NEW, "layer": "nope"}, 404, "has no SAE 'nope'"),
        ({k: v for k, v in NEW.items() if k != "modelId"}, 400, "'modelId' is required."),
        ({**NEW, "index": True}, 400, "'index' must be an integer or a string of digits."),
        ({**NEW, "index": -1}, 400, "'index' must not be negative."),
        ({**NEW, "description": 3}, 400, "'description' must be a string."),
        ([NEW], 400, "The body must be a JSON object."),
    ],
)
def test_bad_writes_are_json_errors(published_feature: Feature, api_key: str, body: Any, status: int,
                                    words: str) -> None:
    response = post("/api/explanation/new", body, **{"x-api-key": api_key})
    assert response.status_code == status
    assert words in response.json()["message"]


def test_body_that_is_not_json_is_400(published_feature: Feature, api_key: str) -> None:
    response = Client().post("/api/explanation/new", "{", content_type="application/json",
                             headers={"x-api-key": api_key})
    assert (response.status_code, response.json()["error"]) == (400, "bad_request")


def test_wrong_method_is_a_json_405(published_feature: Feature) -> None:
    response = Client().get("/api/explanation/new")
    assert (response.status_code, response.json()["error"], response["Allow"]) == (405, "method_not_allowed", "POST")
