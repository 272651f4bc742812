"""POST /api/activation/new and /api/search-all without a worker: validation, and a 503 when nobody answers."""

import json
import uuid
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client

from atlas.features.models import Feature

FEATURE = {"modelId": "tiny-llama", "source": "0-res-8", "index": 3}


def _post(path: str, body: Any) -> HttpResponse:
    response: HttpResponse = Client().post(path, json.dumps(body), content_type="application/json")
    return response


@pytest.fixture
def nobody_listening(settings: Any) -> None:
    """A queue no worker serves, and a short wait."""
    settings.ATLAS_GPU_QUEUE = f"nobody-{uuid.uuid4().hex[:8]}"
    settings.ATLAS_LIVE_TIMEOUT_SECONDS = 0.5


@pytest.mark.parametrize(("path", "body"), [
    ("/api/activation/new", {"feature": FEATURE, "customText": "hello"}),
    ("/api/search-all/", {"modelId": "tiny-llama", "source": "0-res-8", "text": "hello"}),
])
def test_no_worker_is_a_503_that_says_how_to_start_one(published_feature: Feature, nobody_listening: None,
                                                       path: str, body: dict[str, Any]) -> None:
    response = _post(path, body)
    assert response.status_code == 503
    assert response.json() == {
        "error": "no_worker",
        "message": "No worker answered within 0.5 s; start one with `make worker` (a worker busy with a dashboard "
                   "run answers when its shard ends).",
    }


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"feature": FEATURE}, 400, "'customText' is required."),
    ({"feature": FEATURE, "customText": "  \n"}, 400, "'customText' is empty; type some words."),
    ({"feature": FEATURE, "customText": "x" * 4001}, 400, "'customText' has 4001 characters; send at most 4000."),
    ({"customText": "hello"}, 400, "'feature' is required."),
    ({"feature": [FEATURE], "customText": "hello"}, 400, "'feature' must be a JSON object."),
    # Neuronpedia's other name for the SAE is taken too.
    ({"feature": {"modelId": "tiny-llama", "layer": "0-res-8", "index": 8}, "customText": "hi"}, 404, "no feature 8"),
    ({"feature": {**FEATURE, "source": "9-res-1"}, "customText": "hello"}, 404, "has no SAE '9-res-1'"),
    ({"feature": {**FEATURE, "index": 8}, "customText": "hello"}, 404, "there is no feature 8"),
    ({"feature": {**FEATURE, "index": "-1"}, "customText": "hello"}, 400,
     "'feature.index' must be an integer or a string of digits."),
])
def test_activation_new_refuses_a_bad_request_before_asking_a_worker(
    published_feature: Feature, nobody_listening: None, body: dict[str, Any], status: int, words: str
) -> None:
    response = _post("/api/activation/new", body)
    assert response.status_code == status
    assert words in response.json()["message"]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"modelId": "tiny-llama", "source": "0-res-8"}, 400, "'text' is required."),
    ({"modelId": "tiny-llama", "source": "0-res-8", "text": "hi", "numResults": 0}, 400,
     "'numResults' must be at least 1."),
    ({"modelId": "tiny-llama", "source": "0-res-8", "text": "hi", "numResults": 101}, 400,
     "'numResults' must be at most 100."),
    ({"modelId": "tiny-llama", "sourceSet": "res-jb", "text": "hi"}, 404, "no SAE in source set 'res-jb'"),
    ({"modelId": "tiny-llama", "text": "hi"}, 400, "Send 'source' (one SAE) or 'sourceSet'"),
    ({"modelId": "nope", "source": "0-res-8", "text": "hi"}, 404, "No model 'nope'"),
])
def test_search_all_refuses_a_bad_request_before_asking_a_worker(
    published_feature: Feature, nobody_listening: None, body: dict[str, Any], status: int, words: str
) -> None:
    response = _post("/api/search-all", body)
    assert response.status_code == status
    assert words in response.json()["message"]


def test_reading_the_live_endpoints_needs_post(published_feature: Feature) -> None:
    for path in ("/api/activation/new", "/api/search-all"):
        response = Client().get(path)
        assert (response.status_code, response["Allow"]) == (405, "POST")


def test_feature_page_has_a_live_box_that_calls_the_api(published_feature: Feature) -> None:
    page = Client().get("/tiny-llama/0-res-8/3").content.decode()
    assert 'id="live-activation" data-url="/api/activation/new"' in page
    assert 'data-model="tiny-llama" data-source="0-res-8" data-index="3"' in page
    assert 'data-scale="4.000000"' in page
    assert "/static/atlas/live_activations.js" in page


def test_activation_search_page_lists_the_saes_and_selects_the_asked_one(published_feature: Feature) -> None:
    page = Client().get("/search-activations", {"model": "tiny-llama", "source": "0-res-8"}).content.decode()
    assert 'data-url="/api/search-all"' in page
    assert 'data-model="tiny-llama" data-source="0-res-8"\n                selected' in page
    assert "/static/atlas/live_activations.js" in page


def test_live_script_is_served_and_sets_token_text_only_as_text() -> None:
    response = Client().get("/static/atlas/live_activations.js")
    script = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    assert response.status_code == 200
    assert "textContent" in script and ".innerHTML" not in script and "insertAdjacentHTML" not in script
