"""The steering page: /steer offers the models and their SAEs; /steer/<id> embeds a stored result with the settings
it was made with (no worker asked); feature and vector pages link to it; its script sets text only as text."""

import html
import json
import re
from typing import Any

import pytest
from django.test import Client

from atlas.features.models import Feature
from atlas.steering.models import SteerOutput
from atlas.steering.schemas import SteerChatIn, SteerCompletionIn
from atlas.steering.services import steer_plan
from tests import factories

FEATURE = {"modelId": "tiny-llama", "layer": "0-res-8", "index": 3, "strength": 40}
BODY: dict[str, Any] = {"prompt": "Return the number of", "modelId": "tiny-llama", "features": [FEATURE],
                        "temperature": 0.7, "n_tokens": 2, "freq_penalty": 0.5, "seed": 7, "strength_multiplier": 2,
                        "steer_method": "ORTHOGONAL_DECOMP", "normalize_steering": True}
CHAT_MESSAGES = [{"role": "user", "content": "Say hi"}]


def _token(text: str, token_id: int, logprob: float) -> dict[str, Any]:
    return {"token": text, "tokenId": token_id, "logprob": logprob,
            "topLogprobs": [{"token": text, "tokenId": token_id, "logprob": logprob},
                            {"token": " other", "tokenId": 99, "logprob": -3.5}]}


def _side(prompt: str, tokens: list[dict[str, Any]]) -> dict[str, Any]:
    completion = "".join(token["token"] for token in tokens)
    return {"prompt": prompt, "text": prompt + completion, "completion": completion, "tokens": tokens}


def _answer(prompt: str) -> dict[str, Any]:
    """A worker's answer as workers.steer writes it."""
    return {"promptTokenIds": [1, 40, 41], "defaultPromptTokenIds": [1, 40, 41],
            "default": _side(prompt, [_token(" items", 50, -0.4), _token(" in", 51, -0.9)]),
            "steered": _side(prompt, [_token(" joy", 60, -2.5), _token("!", 61, -1.2)])}


def _stored(body: SteerCompletionIn | SteerChatIn, prompt: str) -> SteerOutput:
    plan = steer_plan(body)
    output: SteerOutput = SteerOutput.objects.create(key=plan.key, kind=plan.kind, language_model=plan.language_model,
                                                     settings=plan.asked, answer=_answer(prompt))
    return output


def _island(page: str, element_id: str) -> Any:
    """The data a template wrote with json_script."""
    found = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', page, re.S)
    assert found is not None, element_id
    return json.loads(found.group(1))


@pytest.fixture
def stored(published_feature: Feature) -> SteerOutput:
    return _stored(SteerCompletionIn.model_validate(BODY), BODY["prompt"])


def test_the_page_offers_every_model_and_its_saes(published_feature: Feature) -> None:
    factories.sae_make(published_feature.run.sae.language_model, slug="1-res-8")
    response = Client().get("/steer")
    page = response.content.decode()
    assert response.status_code == 200
    assert '<option value="tiny-llama"' in page
    assert _island(page, "steer-sources") == {"tiny-llama": ["0-res-8", "1-res-8"]}
    assert 'id="steer-result"' not in page
    assert 'data-steer-url="/api/steer"' in page and 'data-search-url="/api/explanation/search"' in page


def test_the_form_offers_the_apis_limits_and_defaults(published_feature: Feature) -> None:
    page = Client().get("/steer/").content.decode()
    assert 'name="n_tokens" value="32" min="1" max="256"' in page
    assert 'name="temperature" value="0.5" min="0" max="2"' in page
    assert 'maxlength="2048"' in page and 'data-strength-limit="300"' in page
    assert [method for method in ("SIMPLE_ADDITIVE", "ORTHOGONAL_DECOMP", "PROJECTION_CAP")
            if f'<option value="{method}"' in page] == ["SIMPLE_ADDITIVE", "ORTHOGONAL_DECOMP", "PROJECTION_CAP"]


def test_the_model_asked_for_is_selected(published_feature: Feature) -> None:
    factories.language_model_make("other-llama")
    page = Client().get("/steer?model=tiny-llama&source=0-res-8&index=3").content.decode()
    assert '<option value="tiny-llama" selected>' in page
    assert re.search(r'<option value="other-llama"\s*>', page)


def test_a_stored_result_is_embedded_with_its_settings(stored: SteerOutput) -> None:
    response = Client().get(f"/steer/{stored.id}")
    page = response.content.decode()
    assert response.status_code == 200
    result = _island(page, "steer-result")
    assert (result["id"], result["shareUrl"]) == (stored.id, f"http://testserver/steer/{stored.id}")
    assert (result["DEFAULT"], result["STEERED"]) == ("Return the number of items in", "Return the number of joy!")
    assert [token["token"] for token in result["steeredLogProbs"]] == [" joy", "!"]
    assert result["defaultLogProbs"][0]["topLogprobs"][1] == {"token": " other", "tokenId": 99, "logprob": -3.5}
    assert result["prompt"] == "Return the number of"
    assert result["features"] == [{**FEATURE, "strength": 40.0}]
    assert result["settings"] == {"temperature": 0.7, "n_tokens": 2, "freq_penalty": 0.5, "seed": 7,
                                  "strength_multiplier": 2.0, "steer_method": "ORTHOGONAL_DECOMP",
                                  "normalize_steering": True, "steer_special_tokens": None}
    assert '<option value="tiny-llama" selected>' in page


def test_a_stored_chat_result_is_embedded_with_both_conversations(published_feature: Feature) -> None:
    body = {name: value for name, value in BODY.items() if name != "prompt"}
    chat = SteerChatIn.model_validate({**body, "defaultChatMessages": CHAT_MESSAGES,
                                       "steeredChatMessages": CHAT_MESSAGES})
    output = _stored(chat, "<|user|>Say hi<|assistant|>")
    result = _island(Client().get(f"/steer/{output.id}").content.decode(), "steer-result")
    assert result["STEERED"]["raw"] == "<|user|>Say hi<|assistant|> joy!"
    assert result["DEFAULT"]["raw"] == "<|user|>Say hi<|assistant|> items in"
    assert result["settings"]["steer_special_tokens"] is True


def test_reopening_a_result_asks_no_worker(stored: SteerOutput, settings: Any) -> None:
    """No worker listens on this queue; the page is served from the table all the same."""
    settings.ATLAS_LIVE_QUEUE = "nobody-listens-here"
    settings.ATLAS_STEER_TIMEOUT_SECONDS = 0.01
    assert Client().get(f"/steer/{stored.id}").status_code == 200


def test_an_unknown_result_is_a_404(db: None) -> None:
    response = Client().get("/steer/nosuchresult")
    assert response.status_code == 404
    assert "No steering result 'nosuchresult'; /steer makes a new one." in html.unescape(response.content.decode())


def test_the_feature_page_links_to_steering_with_it(published_feature: Feature) -> None:
    page = Client().get("/tiny-llama/0-res-8/3").content.decode()
    assert 'href="/steer?model=tiny-llama&amp;source=0-res-8&amp;index=3">Steer with this feature</a>' in page


def test_the_vector_page_links_to_steering_with_it(published_feature: Feature) -> None:
    vector = factories.vector_make(published_feature.run.sae.language_model, factories.user_make())
    page = Client().get(f"/tiny-llama/{vector.source}/{vector.pk}").content.decode()
    assert (f'href="/steer?model=tiny-llama&amp;source={vector.source}&amp;index={vector.pk}">Steer with this '
            "vector</a>") in page


def test_the_script_is_served_and_sets_text_only_as_text() -> None:
    response = Client().get("/static/atlas/steer.js")
    script = b"".join(response.streaming_content).decode()  # type: ignore[attr-defined]
    assert response.status_code == 200
    assert "textContent" in script and ".innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "outerHTML" not in script and "document.write" not in script
