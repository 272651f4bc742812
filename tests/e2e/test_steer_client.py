"""Neuronpedia's own client, unmodified, steers with a live Atlas server and its worker: SteerCompletionRequest and
SteerChatRequest with SAE features, and a vector made by VectorRequest steering through NPVector.steer_completion;
each answer is the one POST /api/steer or /api/steer-chat gives for the same request (the same stored result), with
the worker step's numbers. (TopKByTokenRequest is tests/e2e/test_topk_by_token_client.py's.)"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User
from neuronpedia.np_feature import SteerFeature
from neuronpedia.requests.base_request import NPRequest
from neuronpedia.requests.steer_request import SteerChatRequest, SteerCompletionRequest
from neuronpedia.requests.vector_request import VectorRequest
from pytest_django.live_server_helper import LiveServer

from atlas.accounts.services import api_key_create
from atlas.saes.models import Sae
from atlas.steering.models import SteerOutput
from atlas.steering.schemas import SteerCompletionIn
from atlas.steering.services import steer_plan
from tests import factories
from tests.support.workers import Workers
from workers.steer import steer_compute

PROMPT = "Return the number of items in a container."
# Steering needs no key; the client refuses to send a request without some key.
ANY_KEY = "no-key-needed"
# The SAE's decoder rows have norm about 1 and the tiny model's residual about 8.
STRENGTH = 20.0
# Sampled, so that any other request would show (the seed of tests/pipeline/test_steer.py's chats).
SAMPLING: dict[str, Any] = {"temperature": 1.0, "n_tokens": 12, "freq_penalty": 0.5, "seed": 18,
                            "strength_multiplier": 2}
CHAT = [{"role": "user", "content": "Sort the list in place."}]
OTHER_CHAT = [{"role": "system", "content": "Answer briefly."},
              {"role": "user", "content": "Return the number of items in a container."}]
# What SteerCompletionRequest.steer (NPVector.steer_completion) sends besides the prompt and features.
CLIENT_STEER_DEFAULTS: dict[str, Any] = {"temperature": 0.5, "n_tokens": 32, "freq_penalty": 2, "seed": 42,
                                         "strength_multiplier": 4}


@pytest.fixture
def sae(workers: Workers, media_root: Path, settings: Any) -> Sae:
    """An SAE on disk, a live worker, and the rate limit out of the way."""
    settings.ATLAS_LIVE_RATE = "10000/minute"
    language_model = factories.language_model_make()
    factories.sae_lens_write(media_root / "saes" / "steer", d_in=language_model.d_model)
    sae = factories.sae_make(language_model, slug="0-res-steer", d_sae=48, files_dir="saes/steer")
    workers.start(live_only=True)
    return sae


@pytest.fixture
def server(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The client takes its server from NPRequest.BASE_URL (neuronpedia.org/api unless USE_LOCALHOST)."""
    monkeypatch.setattr(NPRequest, "BASE_URL", f"{live_server.url}/api")
    yield live_server.url


def _api(server: str, path: str, body: dict[str, Any]) -> Any:
    response = requests.post(f"{server}/api/{path}", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _feature(sae: Sae, index: int = 3) -> dict[str, Any]:
    return {"modelId": "tiny-llama", "layer": sae.slug, "index": index, "strength": STRENGTH}


def _assert_logprobs(answered: list[dict[str, Any]], computed: list[dict[str, Any]]) -> None:
    assert [token["tokenId"] for token in answered] == [token["tokenId"] for token in computed]
    assert [token["logprob"] for token in answered] == pytest.approx([token["logprob"] for token in computed],
                                                                      rel=1e-6, abs=1e-6)


def test_the_client_steers_a_completion_with_features_as_the_api_does(server: str, sae: Sae) -> None:
    features = [SteerFeature(modelId="tiny-llama", source=sae.slug, index=index, strength=STRENGTH)
                for index in (3, 5)]
    answer = SteerCompletionRequest(api_key=ANY_KEY).steer_features("tiny-llama", features, PROMPT, **SAMPLING)
    body = {"modelId": "tiny-llama", "prompt": PROMPT, "features": [_feature(sae, 3), _feature(sae, 5)], **SAMPLING}
    assert _api(server, "steer", body) == answer
    assert SteerOutput.objects.get().id == answer["id"]
    assert SteerCompletionRequest(api_key=ANY_KEY).steer_features("tiny-llama", features, PROMPT,
                                                                  **SAMPLING)["id"] == answer["id"]
    computed = steer_compute(steer_plan(SteerCompletionIn.model_validate(body)).task)
    assert "error" not in computed, computed
    assert (answer["STEERED"], answer["DEFAULT"]) == (computed["steered"]["text"], computed["default"]["text"])
    for side, name in (("steeredLogProbs", "steered"), ("defaultLogProbs", "default")):
        _assert_logprobs(answer[side], computed[name]["tokens"])  # type: ignore[literal-required]
    assert answer["STEERED"] != answer["DEFAULT"]
    assert answer["features"] == [{**feature, "strength": STRENGTH} for feature in body["features"]]


def test_the_client_steers_a_chat_with_features_as_the_api_does(server: str, sae: Sae) -> None:
    features = [SteerFeature(modelId="tiny-llama", source=sae.slug, index=3, strength=STRENGTH)]
    answer = SteerChatRequest(api_key=ANY_KEY).steer_features("tiny-llama", features, OTHER_CHAT, CHAT,
                                                              steer_special_tokens=False, **SAMPLING)
    body = {"modelId": "tiny-llama", "features": [_feature(sae)], "defaultChatMessages": OTHER_CHAT,
            "steeredChatMessages": CHAT, "steer_special_tokens": False, **SAMPLING}
    assert _api(server, "steer-chat", body) == answer
    assert SteerOutput.objects.get().id == answer["id"]
    assert answer["STEERED"]["chat_template"][:-1] == CHAT and answer["DEFAULT"]["chat_template"][:-1] == OTHER_CHAT
    assert answer["input"]["chat_template"] == CHAT
    assert answer["STEERED"]["raw"].startswith(answer["input"]["raw"])
    assert len(answer["STEERED"]["logprobs"]) == len(answer["DEFAULT"]["logprobs"]) == SAMPLING["n_tokens"]
    assert answer["settings"]["steer_special_tokens"] is False


def test_a_vector_made_by_the_client_steers_through_np_vector(server: str, sae: Sae,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """NPVector.steer_completion builds its own SteerCompletionRequest: the key comes from NEURONPEDIA_API_KEY, the
    strength from the vector's default, the index as the string the vector API gave."""
    owner = factories.user_make("carol")
    assert isinstance(owner, User)
    key = api_key_create(user=owner).secret
    monkeypatch.setenv("NEURONPEDIA_API_KEY", key)
    vectors = VectorRequest(api_key=key)
    values = [(position % 5 - 2) / 8 for position in range(sae.language_model.d_model)]
    made = vectors.new(label="joy - sorrow", model_id="tiny-llama", layer_num=0, hook_type="hook_resid_post",
                       vector=values, default_steer_strength=STRENGTH)
    assert vectors.get("tiny-llama", made.source, made.index) == made
    answer = made.steer_completion(PROMPT)
    feature = {"modelId": "tiny-llama", "layer": made.source, "index": made.index, "strength": STRENGTH}
    assert _api(server, "steer", {"modelId": "tiny-llama", "prompt": PROMPT, "features": [feature],
                                  **CLIENT_STEER_DEFAULTS}) == answer
    assert answer["features"] == [{**feature, "index": int(made.index)}]
    assert answer["STEERED"] != answer["DEFAULT"]
    assert len(answer["defaultLogProbs"]) == CLIENT_STEER_DEFAULTS["n_tokens"]
    assert made.steer_completion(PROMPT)["id"] == answer["id"] == SteerOutput.objects.get().id
    vectors.delete(made)
    with pytest.raises(requests.exceptions.HTTPError, match="names no vector"):
        made.steer_completion(PROMPT)
