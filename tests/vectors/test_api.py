"""POST /api/vector/new, get, delete, list-owned: Neuronpedia's bodies, an x-api-key for writes, JSON errors."""

import json
from typing import Any

import numpy as np
import pytest
from django.test import Client

from atlas.accounts.services import api_key_create
from atlas.lms.models import LanguageModel
from atlas.vectors.models import Vector
from tests import factories


def post(path: str, body: Any, key: str | None = None) -> Any:
    headers = {"x-api-key": key} if key else {}
    return Client().post(path, json.dumps(body), content_type="application/json", headers=headers)


def width() -> int:
    return factories.tiny_model_facts().d_model


def new_body(**overrides: Any) -> dict[str, Any]:
    # Halves and quarters are exact in float32, so they come back as sent.
    values = [(position % 7 - 3) / 4 for position in range(width())]
    return {"modelId": "tiny-llama", "layerNumber": 1, "hookType": "hook_resid_pre", "vector": values,
            "vectorDefaultSteerStrength": 12.5, "vectorLabel": "joy - sorrow", **overrides}


@pytest.fixture
def key(language_model: LanguageModel) -> str:
    return api_key_create(user=factories.user_make("carol")).secret


@pytest.fixture
def other_key(language_model: LanguageModel) -> str:
    return api_key_create(user=factories.user_make("dave")).secret


def created(key: str, **overrides: Any) -> dict[str, Any]:
    response = post("/api/vector/new", new_body(**overrides), key)
    assert response.status_code == 201, response.json()
    vector: dict[str, Any] = response.json()["vector"]
    return vector


def address(vector: dict[str, Any]) -> dict[str, Any]:
    return {"modelId": vector["modelId"], "source": vector.get("source", vector.get("layer")), "index": vector["index"]}


def test_new_vector_answers_with_its_address_and_values(key: str) -> None:
    response = post("/api/vector/new", new_body(), key)
    assert response.status_code == 201
    body = response.json()
    vector = Vector.objects.get()
    assert body["vector"] == {
        "modelId": "tiny-llama", "source": "1-vectors-resid-pre", "index": str(vector.pk), "label": "joy - sorrow",
        "hookName": "blocks.1.hook_resid_pre", "values": new_body()["vector"], "defaultSteerStrength": 12.5,
        "createdAt": vector.created.isoformat()}
    assert body["url"] == f"http://testserver/tiny-llama/1-vectors-resid-pre/{vector.pk}"
    assert vector.owner.username == "carol"


def test_values_are_stored_as_float32_and_read_back_as_their_shortest_decimal(key: str) -> None:
    values = [0.1] * width()
    vector = created(key, vector=values)
    stored = Vector.objects.get()
    assert stored.values_array().dtype == np.float32
    assert np.array_equal(stored.values_array(), np.asarray(values, dtype=np.float32))
    assert vector["values"] == values


def test_get_is_public_and_answers_in_neuronpedia_get_shape(key: str) -> None:
    vector = created(key)
    response = post("/api/vector/get", {**address(vector), "index": int(vector["index"])})
    assert response.status_code == 200
    assert response.json()["vector"] == {
        "modelId": "tiny-llama", "layer": "1-vectors-resid-pre", "index": vector["index"],
        "vectorLabel": "joy - sorrow", "hookName": "blocks.1.hook_resid_pre", "vector": new_body()["vector"],
        "vectorDefaultSteerStrength": 12.5, "creatorUsername": "carol", "createdAt": vector["createdAt"]}


def test_resid_post_vectors_get_their_own_source(key: str) -> None:
    assert created(key, hookType="hook_resid_post", layerNumber=0)["source"] == "0-vectors-resid-post"


def test_a_null_default_strength_is_neuronpedia_default(key: str) -> None:
    assert created(key, vectorDefaultSteerStrength=None)["defaultSteerStrength"] == 10


def test_list_owned_lists_only_the_key_holder_vectors(key: str, other_key: str) -> None:
    mine = [created(key, vectorLabel="first"), created(key, vectorLabel="second")]
    created(other_key, vectorLabel="not mine")
    response = post("/api/vector/list-owned", None, key)
    assert response.status_code == 200
    assert [(v["index"], v["vectorLabel"]) for v in response.json()["vectors"]] == [
        (mine[1]["index"], "second"), (mine[0]["index"], "first")]


def test_owner_deletes_a_vector(key: str) -> None:
    vector = created(key)
    response = post("/api/vector/delete", address(vector), key)
    assert response.status_code == 200
    assert response.json()["message"] == f"Deleted tiny-llama/1-vectors-resid-pre/{vector['index']}."
    assert not Vector.objects.exists()
    assert post("/api/vector/get", address(vector)).status_code == 404


def test_deleting_another_person_vector_is_403(key: str, other_key: str) -> None:
    vector = created(key)
    response = post("/api/vector/delete", address(vector), other_key)
    assert (response.status_code, response.json()["error"]) == (403, "forbidden")
    assert "Only carol" in response.json()["message"]
    assert Vector.objects.exists()


def test_staff_may_delete_any_vector(key: str) -> None:
    vector = created(key)
    staff_key = api_key_create(user=factories.staff_make()).secret
    assert post("/api/vector/delete", address(vector), staff_key).status_code == 200
    assert not Vector.objects.exists()


@pytest.mark.parametrize("path", ["/api/vector/new", "/api/vector/delete", "/api/vector/list-owned"])
@pytest.mark.parametrize("sent", [None, "atlas_not-a-key"])
def test_writes_without_a_valid_key_are_401(language_model: LanguageModel, path: str, sent: str | None) -> None:
    response = post(path, new_body(), sent)
    assert (response.status_code, response.json()["error"]) == (401, "unauthorized")
    assert not Vector.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"modelId": "tiny-llama", "source": "1-vectors-resid-pre", "index": 999999}, 404,
         "tiny-llama has no vector 1-vectors-resid-pre/999999"),
        ({"modelId": "tiny-llama", "source": "0-res-8", "index": 1}, 404, "has no vector 0-res-8/1"),
        ({"modelId": "nope", "source": "1-vectors-resid-pre", "index": 1}, 404, "No model 'nope'"),
        ({"modelId": "tiny-llama", "source": "1-vectors-resid-pre"}, 400, "'index' is required."),
    ],
)
def test_bad_addresses(key: str, body: dict[str, Any], status: int, words: str) -> None:
    for path in ("/api/vector/get", "/api/vector/delete"):
        response = post(path, body, key)
        assert response.status_code == status
        assert words in response.json()["message"]


def test_a_vector_of_another_source_is_not_found(key: str) -> None:
    vector = created(key)
    response = post("/api/vector/get", {**address(vector), "source": "0-vectors-resid-pre"})
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"vector": [0.5] * 3}, "'vector' has 3 values, but tiny-llama's blocks.1.hook_resid_pre has width"),
        ({"vector": [0.5] * 24577}, "'vector' must hold at most 24576 items."),
        ({"vector": []}, "'vector' must hold at least 1 item(s)."),
        ({"vector": ["0.5"]}, "'vector[0]' must be a number."),
        ({"vector": [True]}, "'vector[0]' must be a number."),
        ({"modelId": "nope"}, "'modelId': there is no model 'nope'"),
        ({"hookType": "hook_z"}, "'hookType' must be one of hook_resid_pre, hook_resid_post."),
        ({"hookType": 3}, "'hookType' must be a string."),
        ({"layerNumber": 2}, "'layerNumber': tiny-llama has layers 0 to 1; there is no layer 2."),
        ({"layerNumber": -1}, "'layerNumber' must not be negative."),
        ({"vectorLabel": "  "}, "'vectorLabel' is empty"),
        ({"vectorLabel": "x" * 201}, "'vectorLabel' must be at most 200 characters long."),
        ({"vectorDefaultSteerStrength": 301}, "'vectorDefaultSteerStrength' must be at most 300"),
        ({"vectorLabel": None}, "'vectorLabel' must be a string."),
    ],
)
def test_bad_vectors_are_400_naming_the_field(key: str, overrides: dict[str, Any], words: str) -> None:
    response = post("/api/vector/new", new_body(**overrides), key)
    assert (response.status_code, response.json()["error"]) == (400, "bad_request")
    assert words in response.json()["message"]
    assert not Vector.objects.exists()


def test_a_value_beyond_float32_is_400_naming_vector(key: str) -> None:
    values = new_body()["vector"]
    values[5] = 1e39
    response = post("/api/vector/new", new_body(vector=values), key)
    assert response.status_code == 400
    assert "'vector' value 5 (1e+39) is not a finite float32" in response.json()["message"]
    assert not Vector.objects.exists()


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_400(key: str, literal: str) -> None:
    """As Python's json (and so the client) writes them; JSON itself has no such numbers."""
    text = json.dumps(new_body()).replace('"vector": [', f'"vector": [{literal}, ', 1)
    response = Client().post("/api/vector/new", text, content_type="application/json", headers={"x-api-key": key})
    assert (response.status_code, response.json()["error"]) == (400, "bad_request")
    assert literal in response.json()["message"]
    assert not Vector.objects.exists()
