"""POST /api/steer and /api/steer-chat through a real worker process: each answer is what the worker step computes
for the same task; strength 0 steers nothing; a repeat is answered from the table, with no worker; a request the
worker refuses is a 400 with its message and stores nothing; chats render under the tiny model's chat template."""

import json
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from atlas.saes.models import Sae
from atlas.steering.models import SteerOutput
from atlas.steering.schemas import SteerChatIn, SteerCompletionIn
from atlas.steering.services import steer_plan
from tests import factories
from tests.support.workers import Workers
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.steer_types import SteerCompletion, SteerResponse
from workers.steer import steer_compute

PROMPT = "Return the number of items in a container."
# The SAE's decoder rows have norm about 1 and the tiny model's residual about 8: 20 x 2 changes what it says.
FEATURE = {"modelId": "tiny-llama", "layer": "0-res-steer", "index": 3, "strength": 20}
SETTINGS: dict[str, Any] = {"modelId": "tiny-llama", "features": [FEATURE], "temperature": 1.0, "n_tokens": 12,
                            "freq_penalty": 0.5, "seed": 16, "strength_multiplier": 2}
BODY: dict[str, Any] = {**SETTINGS, "prompt": PROMPT}
CHAT = [{"role": "user", "content": "Sort the list in place."}]
OTHER_CHAT = [{"role": "system", "content": "Answer briefly."},
              {"role": "user", "content": "Return the number of items in a container."}]
# Seed 18 (under 16, 17 or 20 the unsteered tiny model puts the NUL byte's token among its top 5 after "assistant\n",
# stored as the symbol for it: test_a_nul_token_in_the_answer_is_stored).
CHAT_BODY: dict[str, Any] = {**SETTINGS, "seed": 18, "defaultChatMessages": CHAT, "steeredChatMessages": CHAT,
                             "steer_special_tokens": True}
# Batch of two (one conversation) against a batch of one (two): the same tokens, log-probs to float32 rounding.
BATCH_TOLERANCE = 1e-4


@pytest.fixture
def sae(workers: Workers, media_root: Path, settings: Any) -> Sae:
    """An SAE on disk (no run needed to steer), a live worker, and the rate limit out of the way."""
    settings.ATLAS_LIVE_RATE = "10000/minute"
    language_model = factories.language_model_make()
    factories.sae_lens_write(media_root / "saes" / "steer", d_in=language_model.d_model)
    sae = factories.sae_make(language_model, slug="0-res-steer", d_sae=48, files_dir="saes/steer")
    workers.start(live_only=True)
    return sae


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerBase:
    loaded: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(factories.tiny_model_dir())
    return loaded


def _post(path: str, body: dict[str, Any]) -> tuple[int, Any]:
    response = Client(raise_request_exception=False).post(path, json.dumps(body), content_type="application/json")
    return response.status_code, response.json()


def _ok(path: str, body: dict[str, Any]) -> Any:
    status, answer = _post(path, body)
    assert status == 200, answer
    return answer


def _computed(body: dict[str, Any]) -> SteerResponse:
    """What the worker step gives, in this process, for the task the web sends for body."""
    schema = SteerChatIn if "steeredChatMessages" in body else SteerCompletionIn
    answer = steer_compute(steer_plan(schema.model_validate(body)).task)
    assert "error" not in answer, answer
    return answer


def _rendered(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert isinstance(rendered, str)
    return rendered


def _assert_logprobs(answered: list[dict[str, Any]], computed: list[dict[str, Any]],
                     tolerance: float = 1e-6) -> None:
    """The same tokens and alternatives, with the same log-probs."""
    assert len(answered) == len(computed) > 0

    def ids(tokens: list[dict[str, Any]]) -> list[Any]:
        return [(token["token"], token["tokenId"], [(top["token"], top["tokenId"]) for top in token["topLogprobs"]])
                for token in tokens]

    def values(tokens: list[dict[str, Any]]) -> list[float]:
        return [value for token in tokens for value in (token["logprob"],
                                                        *(top["logprob"] for top in token["topLogprobs"]))]

    assert ids(answered) == ids(computed)
    assert values(answered) == pytest.approx(values(computed), rel=tolerance, abs=tolerance)


def _assert_side(side: dict[str, Any], computed: SteerCompletion) -> None:
    """One side of a chat answer against the worker step's completion."""
    assert side["raw"] == computed["text"]
    assert side["chat_template"][-1] == {"role": "assistant", "content": computed["completion"]}
    _assert_logprobs(side["logprobs"], list(computed["tokens"]))  # type: ignore[arg-type]


def test_a_completion_is_what_the_worker_step_computes(sae: Sae) -> None:
    answer = _ok("/api/steer", BODY)
    computed = _computed(BODY)
    assert (answer["STEERED"], answer["DEFAULT"]) == (computed["steered"]["text"], computed["default"]["text"])
    assert answer["STEERED"].startswith(PROMPT) and answer["DEFAULT"].startswith(PROMPT)
    _assert_logprobs(answer["steeredLogProbs"], list(computed["steered"]["tokens"]))  # type: ignore[arg-type]
    _assert_logprobs(answer["defaultLogProbs"], list(computed["default"]["tokens"]))  # type: ignore[arg-type]
    assert answer["STEERED"] != answer["DEFAULT"]
    assert answer["prompt"] == PROMPT and answer["shareUrl"].endswith(f"/steer/{answer['id']}")
    assert SteerOutput.objects.get().id == answer["id"]


def test_strength_zero_gives_steered_equal_to_default(sae: Sae) -> None:
    answer = _ok("/api/steer", {**BODY, "features": [{**FEATURE, "strength": 0}]})
    assert answer["STEERED"] == answer["DEFAULT"]
    assert answer["steeredLogProbs"] == answer["defaultLogProbs"]
    assert len(answer["defaultLogProbs"]) == BODY["n_tokens"]
    # Sampled (temperature 1), so equal rows are the steer doing nothing, not greedy decoding agreeing.
    steered = _ok("/api/steer", BODY)
    assert steered["DEFAULT"] == answer["DEFAULT"] and steered["STEERED"] != answer["STEERED"]


def test_the_same_seed_gives_the_same_texts_and_a_repeat_needs_no_worker(sae: Sae, workers: Workers,
                                                                          settings: Any) -> None:
    first = _ok("/api/steer", BODY)
    SteerOutput.objects.all().delete()
    again = _ok("/api/steer", BODY)  # computed again by the worker, under the same seed
    assert again["id"] != first["id"]
    assert {**again, "id": None, "shareUrl": None} == {**first, "id": None, "shareUrl": None}
    workers.stop_all()
    settings.ATLAS_STEER_TIMEOUT_SECONDS = 1.0
    assert _ok("/api/steer", BODY) == again  # from the table
    assert SteerOutput.objects.count() == 1
    status, refused = _post("/api/steer", {**BODY, "seed": 17})  # a new request does need one
    assert (status, refused["error"]) == (503, "no_worker")


def test_a_request_the_worker_refuses_is_a_400_with_its_message_and_stores_nothing(sae: Sae) -> None:
    body = {**BODY, "n_tokens": factories.tiny_model_facts().n_ctx}  # the prompt's tokens and these exceed n_ctx
    refusal = steer_compute(steer_plan(SteerCompletionIn.model_validate(body)).task)
    assert "promptTokenIds" not in refusal, "the worker step ran it"
    assert "exceed the model's context of 128" in refusal["error"]
    status, answer = _post("/api/steer", body)
    assert (status, answer) == (400, {"error": "bad_request", "message": refusal["error"]})
    assert not SteerOutput.objects.exists()


@pytest.mark.parametrize("steer_special_tokens", [True, False])
def test_a_chat_is_the_worker_step_s_reply_under_the_chat_template(
    sae: Sae, tokenizer: PreTrainedTokenizerBase, steer_special_tokens: bool
) -> None:
    body = {**CHAT_BODY, "steer_special_tokens": steer_special_tokens}
    answer = _ok("/api/steer-chat", body)
    computed = _computed(body)
    rendered = _rendered(tokenizer, CHAT)
    assert rendered.startswith("<|bos|>user\n") and rendered.endswith("<|bos|>assistant\n")
    assert answer["input"] == {"raw": rendered, "chat_template": CHAT}
    for side, completion in ((answer["STEERED"], computed["steered"]), (answer["DEFAULT"], computed["default"])):
        _assert_side(side, completion)
        assert side["raw"].startswith(rendered)
        assert side["chat_template"] == [*CHAT, {"role": "assistant", "content": side["raw"][len(rendered):]}]
    assert answer["STEERED"]["raw"] != answer["DEFAULT"]["raw"]
    assert answer["settings"]["steer_special_tokens"] is steer_special_tokens


def test_leaving_special_tokens_unsteered_changes_the_steered_side_only(sae: Sae) -> None:
    every = _ok("/api/steer-chat", CHAT_BODY)
    but_special = _ok("/api/steer-chat", {**CHAT_BODY, "steer_special_tokens": False})
    assert but_special["id"] != every["id"]
    assert but_special["DEFAULT"] == every["DEFAULT"]
    assert but_special["STEERED"]["logprobs"] != every["STEERED"]["logprobs"]


def test_a_chat_with_two_conversations_answers_each_with_its_own(sae: Sae,
                                                                 tokenizer: PreTrainedTokenizerBase) -> None:
    body = {**CHAT_BODY, "defaultChatMessages": OTHER_CHAT}
    answer = _ok("/api/steer-chat", body)
    computed = _computed(body)
    assert computed["defaultPromptTokenIds"] != computed["promptTokenIds"]
    _assert_side(answer["STEERED"], computed["steered"])
    _assert_side(answer["DEFAULT"], computed["default"])
    assert answer["input"] == {"raw": _rendered(tokenizer, CHAT), "chat_template": CHAT}
    assert answer["STEERED"]["raw"].startswith(_rendered(tokenizer, CHAT))
    assert answer["DEFAULT"]["raw"].startswith(_rendered(tokenizer, OTHER_CHAT))
    assert answer["DEFAULT"]["chat_template"][:-1] == OTHER_CHAT
    # DEFAULT is the plain model on its own conversation: what a chat of that conversation alone says unsteered.
    alone = _ok("/api/steer-chat", {**CHAT_BODY, "defaultChatMessages": OTHER_CHAT,
                                    "steeredChatMessages": OTHER_CHAT})["DEFAULT"]
    assert answer["DEFAULT"]["raw"] == alone["raw"]
    _assert_logprobs(answer["DEFAULT"]["logprobs"], alone["logprobs"], tolerance=BATCH_TOLERANCE)


def test_a_nul_token_in_the_answer_is_stored(sae: Sae, tokenizer: PreTrainedTokenizerBase, media_root: Path) -> None:
    """A vector along the NUL token's unembedding at the last layer makes STEERED say that token over and over."""
    nul = next(token for token in range(len(tokenizer)) if tokenizer.decode([token]) == "\x00")
    model = load_language_model(ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir())))
    vector = factories.vector_make(sae.language_model, factories.user_make(), layer=1, hook_type="hook_resid_post",
                                   values=model.W_U[:, nul].tolist())
    body = {**BODY, "temperature": 0, "freq_penalty": 0, "normalize_steering": True, "strength_multiplier": 1,
            "features": [{"modelId": "tiny-llama", "layer": vector.source, "index": str(vector.pk), "strength": 300}]}
    status, answer = _post("/api/steer", body)
    assert status == 200, answer
    assert [token["tokenId"] for token in answer["steeredLogProbs"]] == [nul] * BODY["n_tokens"]
    # Postgres's jsonb holds no NUL: the token is stored and shown as the symbol for it, its id beside it.
    assert {token["token"] for token in answer["steeredLogProbs"]} == {"\u2400"}
    assert answer["STEERED"].endswith("\u2400" * BODY["n_tokens"])
    assert _ok("/api/steer", body)["id"] == answer["id"] == SteerOutput.objects.get().id
