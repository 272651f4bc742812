"""POST /api/features and /api/features-offset: several features in Neuronpedia's shape, JSON errors."""

import json
from typing import Any

import pytest
from django.test import Client

from atlas.features.models import Feature


def post(path: str, body: Any) -> Any:
    return Client().post(path, json.dumps(body), content_type="application/json")


@pytest.mark.parametrize("path", ["/api/features", "/api/features/"])
def test_features_come_back_in_the_order_asked(published_feature: Feature, path: str) -> None:
    lookups = [{"modelId": "tiny-llama", "layer": "0-res-8", "index": index} for index in (5, 3, "1")]
    response = post(path, lookups)
    assert response.status_code == 200
    assert [feature["index"] for feature in response.json()] == [5, 3, 1]
    assert response.json()[1]["maxActApprox"] == 4.0


def test_a_missing_feature_is_a_404(published_feature: Feature) -> None:
    response = post("/api/features", [{"modelId": "tiny-llama", "layer": "0-res-8", "index": 99}])
    assert (response.status_code, response.json()["error"]) == (404, "not_found")


@pytest.mark.parametrize("body", [[], {"modelId": "tiny-llama"}, [1], [{"modelId": "tiny-llama", "layer": 3}]])
def test_a_malformed_list_is_a_400(published_feature: Feature, body: Any) -> None:
    assert post("/api/features", body).status_code == 400


@pytest.mark.parametrize(("offset", "expected"), [(0, list(range(8))), (5, [5, 6, 7]), (8, [])])
def test_features_offset_pages_through_an_sae(published_feature: Feature, offset: int, expected: list[int]) -> None:
    response = post("/api/features-offset/", {"modelId": "tiny-llama", "layer": "0-res-8", "offset": offset})
    assert [feature["index"] for feature in response.json()] == expected


def test_features_offset_returns_one_page(published_feature: Feature, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("atlas.features.selectors.API_FEATURES_PER_OFFSET", 3)
    response = post("/api/features-offset", {"modelId": "tiny-llama", "layer": "0-res-8", "offset": 2})
    assert [feature["index"] for feature in response.json()] == [2, 3, 4]


def test_features_offset_refuses_a_negative_offset(published_feature: Feature) -> None:
    response = post("/api/features-offset", {"modelId": "tiny-llama", "layer": "0-res-8", "offset": -1})
    assert response.status_code == 400
