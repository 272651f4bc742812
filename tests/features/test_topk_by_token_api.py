"""POST /api/search-topk-by-token without a worker: validation (a 400 naming the field), a 503 when nobody answers,
and the filters it applies to a worker's answer."""

import json
import uuid
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client

from atlas.features.live import TokenFeatures, tokens_shown
from atlas.features.models import Feature

BODY = {"modelId": "tiny-llama", "source": "0-res-8", "text": "hello"}


def _post(body: Any) -> HttpResponse:
    response: HttpResponse = Client().post("/api/search-topk-by-token", json.dumps(body),
                                           content_type="application/json")
    return response


@pytest.fixture
def nobody_listening(settings: Any) -> None:
    """A live queue no worker serves, and a short wait."""
    settings.ATLAS_LIVE_QUEUE = f"nobody-{uuid.uuid4().hex[:8]}"
    settings.ATLAS_LIVE_TIMEOUT_SECONDS = 0.5


def test_no_worker_is_a_503_that_says_how_to_start_one(published_feature: Feature, nobody_listening: None) -> None:
    response = _post(BODY)
    assert response.status_code == 503
    assert response.json()["error"] == "no_worker"
    assert "start one with `make worker`" in response.json()["message"]


@pytest.mark.parametrize(("changes", "words"), [
    ({"numResults": 0}, "'numResults' must be at least 1."),
    ({"numResults": 21}, "'numResults' must be at most 20."),
    ({"numResults": "5"}, "'numResults' must be an integer."),
    ({"text": ""}, "'text' is empty; type some words."),
    ({"text": " \n\t"}, "'text' is empty; type some words."),
    ({"text": "x" * 4001}, "'text' has 4001 characters; send at most 4000."),
    ({"text": None}, "'text' must be a string."),
    ({"ignoreBos": "yes"}, "'ignoreBos' "),
    ({"densityThreshold": 1}, "'densityThreshold' is 1.0; send 0 (no filter) or a density above 0 and below 1."),
    ({"densityThreshold": -0.5}, "'densityThreshold' is -0.5; send 0"),
    ({"densityThreshold": True}, "'densityThreshold' must be a number"),
    ({"densityThreshold": "0.1"}, "'densityThreshold' must be a number"),
])
def test_a_bad_request_is_a_400_naming_the_field_before_asking_a_worker(
    published_feature: Feature, nobody_listening: None, changes: dict[str, Any], words: str
) -> None:
    response = _post({**BODY, **changes})
    assert response.status_code == 400, response.content
    assert words in response.json()["message"]


# A 404, as on every endpoint: schemathesis counts a 400 for a body the schema takes as a broken promise.
@pytest.mark.parametrize(("changes", "words"), [
    ({"modelId": "nope"}, "'modelId' names no model: No model 'nope'."),
    ({"source": "9-res-1"}, "'source' names no SAE of the model: Model 'tiny-llama' has no SAE '9-res-1'."),
])
def test_an_unknown_model_or_sae_is_a_404_naming_the_field(
    published_feature: Feature, nobody_listening: None, changes: dict[str, Any], words: str
) -> None:
    response = _post({**BODY, **changes})
    assert (response.status_code, response.json()["error"]) == (404, "not_found")
    assert words in response.json()["message"]


@pytest.mark.parametrize("missing", ["modelId", "source", "text"])
def test_each_of_model_source_and_text_is_required(published_feature: Feature, missing: str) -> None:
    response = _post({name: value for name, value in BODY.items() if name != missing})
    assert (response.status_code, response.json()["message"]) == (400, f"'{missing}' is required.")


def test_null_asks_for_each_default(published_feature: Feature, nobody_listening: None) -> None:
    """Past validation, so the request waits for a worker."""
    response = _post({**BODY, "numResults": None, "ignoreBos": None, "densityThreshold": None})
    assert response.status_code == 503


def test_reading_it_needs_post(published_feature: Feature) -> None:
    response = Client().get("/api/search-topk-by-token")
    assert (response.status_code, response["Allow"]) == (405, "POST")


TOKENS = [
    TokenFeatures(0, "<s>", True, [(1, 9.0)]),
    TokenFeatures(1, "hello", False, [(3, 2.0), (6, 1.0), (7, 0.5)]),
    TokenFeatures(2, "</s>", True, [(3, 1.0)]),
]
DENSITIES = {3: 0.25, 6: 0.5, 7: 0.0}


def test_ignore_bos_leaves_out_position_0_and_special_tokens() -> None:
    shown = tokens_shown(TOKENS, ignore_bos=True, densities=DENSITIES, density_threshold=0)
    assert shown == [TOKENS[1]]
    assert tokens_shown(TOKENS, ignore_bos=False, densities=DENSITIES, density_threshold=0) == TOKENS


def test_a_density_threshold_keeps_published_features_no_denser_than_it() -> None:
    shown = tokens_shown(TOKENS, ignore_bos=False, densities=DENSITIES, density_threshold=0.25)
    # Feature 1 has no published density, 6 is denser than 0.25, 7 never fired where it was published.
    assert [token.features for token in shown] == [[], [(3, 2.0)], [(3, 1.0)]]


def test_the_activation_search_page_has_the_by_token_view(published_feature: Feature) -> None:
    page = Client().get("/search-activations").content.decode()
    assert 'id="topk-by-token" data-url="/api/search-topk-by-token"' in page
    assert "/static/atlas/topk_by_token.js" in page


def test_the_by_token_script_is_served_and_sets_token_text_only_as_text() -> None:
    response = Client().get("/static/atlas/topk_by_token.js")
    script = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    assert response.status_code == 200
    assert "textContent" in script and ".innerHTML" not in script and "insertAdjacentHTML" not in script
