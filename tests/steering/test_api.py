"""POST /api/steer and /api/steer-chat without a worker: each refusal is a 400 naming the field and stores nothing,
a missing worker is a 503 saying what to start, and a stored result answers an identical request by itself."""

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client

from atlas.saes.models import Sae
from atlas.steering.models import SteerOutput
from atlas.steering.schemas import SteerCompletionIn
from atlas.steering.services import steer_plan
from atlas.vectors.services import vector_create
from tests import factories

FEATURE = {"modelId": "tiny-llama", "layer": "0-res-8", "index": 3, "strength": 20}
BODY: dict[str, Any] = {"prompt": "Once upon a time", "modelId": "tiny-llama", "features": [FEATURE],
                        "temperature": 0.5, "n_tokens": 8, "seed": 16, "strength_multiplier": 2}
CHAT_BODY: dict[str, Any] = {
    **{name: value for name, value in BODY.items() if name != "prompt"},
    "defaultChatMessages": [{"role": "user", "content": "hi"}],
    "steeredChatMessages": [{"role": "user", "content": "hi"}], "steer_special_tokens": True}


def _post(body: Any, path: str = "/api/steer") -> HttpResponse:
    response: HttpResponse = Client().post(path, json.dumps(body), content_type="application/json")
    return response


@pytest.fixture
def sae(published_feature: Any) -> Sae:
    return Sae.objects.get(slug="0-res-8")


@pytest.fixture
def nobody_listening(settings: Any) -> None:
    """A live queue no worker serves, and a short wait."""
    settings.ATLAS_LIVE_QUEUE = f"nobody-{uuid.uuid4().hex[:8]}"
    settings.ATLAS_STEER_TIMEOUT_SECONDS = 0.5


def _answer(text: str) -> dict[str, Any]:
    token = {"token": " x", "tokenId": 7, "logprob": -0.5, "topLogprobs": [{"token": " x", "tokenId": 7,
                                                                         "logprob": -0.5}]}
    side = {"prompt": "Once upon a time", "text": f"Once upon a time{text}", "completion": text, "tokens": [token]}
    return {"promptTokenIds": [1, 2], "defaultPromptTokenIds": [1, 2], "default": side,
            "steered": {**side, "text": "Once upon a time steered"}}


def test_no_worker_is_a_503_that_says_how_to_start_one_and_stores_nothing(sae: Sae, nobody_listening: None) -> None:
    response = _post(BODY)
    assert (response.status_code, response.json()["error"]) == (503, "no_worker")
    assert "within 0.5 s; start one with `make worker`" in response.json()["message"]
    assert not SteerOutput.objects.exists()


@pytest.mark.parametrize(("changes", "words"), [
    ({"prompt": ""}, "'prompt' is empty; type a prompt."),
    ({"prompt": " \n"}, "'prompt' is empty; type a prompt."),
    ({"prompt": "x" * 2049}, "'prompt' has 2049 characters; send at most 2048."),
    ({"n_tokens": 257}, "'n_tokens' must be at most 256."),
    ({"n_tokens": 0}, "'n_tokens' must be at least 1."),
    ({"temperature": 2.5}, "'temperature' must be at most 2."),
    ({"temperature": -1}, "'temperature' must not be negative."),
    ({"strength_multiplier": 11}, "'strength_multiplier' must be at most 10."),
    ({"strength_multiplier": -1}, "'strength_multiplier' must not be negative."),
    ({"freq_penalty": 3}, "'freq_penalty' must be at most 2."),
    ({"seed": 10**9}, "'seed' must be at most 100000000."),
    ({"steer_method": "MAGIC"}, "'steer_method' must be one of SIMPLE_ADDITIVE, ORTHOGONAL_DECOMP, PROJECTION_CAP."),
    ({"features": []}, "'features' must hold at least 1 item(s)."),
    ({"features": [{**FEATURE, "strength": 301}]}, "'features[0].strength' must be at most 300.0."),
    ({"features": [{**FEATURE, "strength": "big"}]}, "'features[0].strength' must be a number."),
    ({"features": [{**FEATURE, "index": -1}]}, "'features[0].index' must not be negative."),
    ({"modelId": "nope"}, "'modelId' names no model: No model 'nope'."),
    ({"features": [{**FEATURE, "modelId": "other"}]},
     "'features[0].modelId' is 'other', but the request steers 'tiny-llama'; steer with features of that model."),
    ({"features": [{**FEATURE, "layer": "9-res-1"}]},
     "'features[0].layer' names no SAE: Model 'tiny-llama' has no SAE '9-res-1'."),
    ({"features": [{**FEATURE, "index": 48}]}, "'features[0].index' is 48, but tiny-llama/0-res-8 has features 0 to"),
    ({"features": [{**FEATURE, "layer": "0-vectors-resid-post", "index": 999}]},
     "'features[0]' names no vector: tiny-llama has no vector 0-vectors-resid-post/999"),
    ({"defaultChatMessages": [{"role": "user", "content": "hi"}]},
     "'defaultChatMessages' belong to /api/steer-chat; send a prompt to /api/steer or chat messages to "
     "/api/steer-chat, not both"),
])
def test_a_bad_request_is_a_400_naming_the_field_and_stores_nothing(
    sae: Sae, nobody_listening: None, changes: dict[str, Any], words: str
) -> None:
    response = _post({**BODY, **changes})
    assert (response.status_code, response.json()["error"]) == (400, "bad_request"), response.content
    assert words in response.json()["message"]
    assert not SteerOutput.objects.exists()


@pytest.mark.parametrize(("changes", "words"), [
    ({"prompt": "hi"}, "'prompt' belong to /api/steer; send a prompt to /api/steer or chat messages"),
    ({"steeredChatMessages": []}, "'steeredChatMessages' must hold at least 1 item(s)."),
    ({"steeredChatMessages": [{"role": "robot", "content": "hi"}]},
     "'steeredChatMessages[0].role' must be one of user, assistant, system, model, developer."),
    ({"defaultChatMessages": [{"role": "user", "content": "x" * 1500}, {"role": "user", "content": "y" * 600}]},
     "'defaultChatMessages' holds 2100 characters in all; send at most 2048"),
    ({"steer_special_tokens": "yes"}, "'steer_special_tokens' "),
])
def test_a_bad_chat_request_is_a_400_naming_the_field(sae: Sae, nobody_listening: None, changes: dict[str, Any],
                                                      words: str) -> None:
    response = _post({**CHAT_BODY, **changes}, "/api/steer-chat")
    assert response.status_code == 400, response.content
    assert words in response.json()["message"]


def test_defaults_fill_what_is_left_out_or_null(sae: Sae, nobody_listening: None) -> None:
    """Past validation, so the request waits for a worker."""
    assert _post({"prompt": "hi", "modelId": "tiny-llama", "features": [FEATURE]}).status_code == 503
    body = {**BODY, "temperature": None, "n_tokens": None, "seed": None, "steer_method": None, "freq_penalty": None}
    assert _post(body).status_code == 503


def test_a_vector_index_may_be_a_string_as_the_client_sends_it(sae: Sae, nobody_listening: None,
                                                              media_root: Path) -> None:
    vector = vector_create(language_model_slug="tiny-llama", layer=0, hook_type="hook_resid_post",
                           values=[0.5] * sae.language_model.d_model, label="probe", default_strength=10.0,
                           owner=factories.user_make())
    feature = {"modelId": "tiny-llama", "layer": vector.source, "index": str(vector.pk), "strength": 10}
    assert _post({**BODY, "features": [feature]}).status_code == 503


def test_a_stored_result_answers_an_identical_request_without_a_worker(sae: Sae, nobody_listening: None) -> None:
    plan = steer_plan(SteerCompletionIn.model_validate(BODY))
    stored = SteerOutput.objects.create(key=plan.key, kind=plan.kind, language_model=plan.language_model,
                                        settings=plan.asked, answer=_answer(" there"))
    answer = _post(BODY).json()
    assert answer["id"] == stored.id
    assert answer["shareUrl"] == f"http://testserver/steer/{stored.id}"
    assert (answer["DEFAULT"], answer["STEERED"]) == ("Once upon a time there", "Once upon a time steered")
    assert answer["defaultLogProbs"] == [{"token": " x", "tokenId": 7, "logprob": -0.5,
                                          "topLogprobs": [{"token": " x", "tokenId": 7, "logprob": -0.5}]}]
    assert answer["features"] == [{**FEATURE, "strength": 20.0}]
    assert answer["settings"]["n_tokens"] == 8 and answer["settings"]["strength_multiplier"] == 2.0
    # Any parameter changed is another request, which needs the worker.
    assert _post({**BODY, "seed": 17}).status_code == 503
    assert _post({**BODY, "features": [{**FEATURE, "strength": 21}]}).status_code == 503


def test_the_key_covers_every_parameter_and_names_directions_by_their_rows(sae: Sae) -> None:
    def key(**changes: Any) -> str:
        return steer_plan(SteerCompletionIn.model_validate({**BODY, **changes})).key

    base = key()
    assert key() == base and key(features=[{**FEATURE, "index": "3"}]) == base
    changed = [key(prompt="Once upon a time,"), key(temperature=0.6), key(n_tokens=9), key(seed=1),
               key(strength_multiplier=3), key(freq_penalty=0), key(steer_method="ORTHOGONAL_DECOMP"),
               key(normalize_steering=True), key(features=[{**FEATURE, "index": 4}]),
               key(features=[{**FEATURE, "strength": 1}])]
    assert len({base, *changed}) == len(changed) + 1


def test_reading_them_needs_post(sae: Sae) -> None:
    for path in ("/api/steer", "/api/steer-chat"):
        response = Client().get(path)
        assert (response.status_code, response["Allow"]) == (405, "POST")
