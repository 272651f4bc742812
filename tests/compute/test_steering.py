"""Steering on the tiny model: each method's effect at its hook, the batch of two over the KV cache against each row
alone without it, seeded sampling, greedy decoding, the frequency penalty; and the worker step on stored SAEs."""

from pathlib import Path

import numpy as np
import pytest
import torch
from django.conf import settings
from torch import Tensor
from transformer_lens import HookedTransformer

from atlas.celery import app as celery_app
from atlas.lms.models import LanguageModel
from tests import factories
from tests.support.workers import Workers
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.live import text_tokens
from workers.compute.sae import sae_load
from workers.compute.steer_types import SteerRequest
from workers.compute.steering import (
    Completion,
    GenerationParams,
    HookFunction,
    SteerDirection,
    SteeringError,
    SteerMethod,
    adjusted_logits,
    generate_rows,
    next_tokens,
    plain_generate,
    steer_generate,
    steering_direction,
    steering_hooks,
)
from workers.steer import steer_compute

PROMPT = "Return the number of items in a container."
OTHER_HOOK = "blocks.1.hook_resid_post"
# Large enough against the tiny model's residual (norm about 8) to change what it says.
STRONG = 40.0


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return load_language_model(ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir())))


@pytest.fixture(scope="module")
def prompt(model: HookedTransformer) -> Tensor:
    return text_tokens(model, PROMPT)  # [1, T]


def _direction(model: HookedTransformer, coefficient: float, hook_name: str = factories.TINY_HOOK,
               seed: int = 0) -> SteerDirection:
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(seed))
    return steering_direction(vector, coefficient, hook_name, normalize=True)


def _hook_values(model: HookedTransformer, tokens: Tensor,
                 hooks: list[tuple[str, object]]) -> dict[str, Tensor]:
    """Every hook's activations [2, T, ...] for tokens [1, T] run as a batch of two under the hooks."""
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):  # type: ignore[arg-type]
        _, cache = model.run_with_cache(tokens.repeat(2, 1))
    return dict(cache.items())


def _steered_at_hook(model: HookedTransformer, prompt: Tensor, direction: SteerDirection,
                     method: SteerMethod) -> tuple[Tensor, Tensor, dict[str, Tensor], dict[str, Tensor]]:
    """(h, h after steering) at the direction's hook, rows [T, d]; and all hooks' values plain and steered."""
    plain = _hook_values(model, prompt, [])
    steered = _hook_values(model, prompt, steering_hooks([direction], method))  # type: ignore[arg-type]
    return plain[direction.hook_name][1], steered[direction.hook_name][1], plain, steered


def test_additive_steering_adds_c_times_d_at_every_position(model: HookedTransformer, prompt: Tensor) -> None:
    direction = _direction(model, 7.5)
    h, after, plain, steered = _steered_at_hook(model, prompt, direction, SteerMethod.SIMPLE_ADDITIVE)
    assert torch.equal(after, h + 7.5 * direction.vector)
    assert torch.equal(steered[direction.hook_name][0], plain[direction.hook_name][0])  # DEFAULT row untouched


def test_orthogonal_decomposition_scales_the_component_along_d(model: HookedTransformer, prompt: Tensor) -> None:
    direction = _direction(model, 3.0)
    h, after, _, _ = _steered_at_hook(model, prompt, direction, SteerMethod.ORTHOGONAL_DECOMP)
    d = direction.vector[:, None]  # [d, 1]
    projection = d @ d.T / (d.T @ d)  # P [d, d]
    identity = torch.eye(model.cfg.d_model)
    expected = h @ (identity - projection).T + 3.0 * (h @ projection.T)  # (I - P)h + cPh for each position
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)


def test_projection_cap_clips_the_component_along_d_and_keeps_the_rest(model: HookedTransformer,
                                                                         prompt: Tensor) -> None:
    unsteered = _hook_values(model, prompt, [])[factories.TINY_HOOK][1]
    direction = _direction(model, 0.0)
    cap = float((unsteered @ direction.vector).median())  # some positions above the cap, some below
    direction = steering_direction(direction.vector, cap, factories.TINY_HOOK, normalize=False)
    h, after, _, _ = _steered_at_hook(model, prompt, direction, SteerMethod.PROJECTION_CAP)
    unit = direction.vector / direction.vector.norm()
    before_along, after_along = h @ unit, after @ unit
    assert (before_along > cap + 1e-3).any() and (before_along < cap - 1e-3).any()
    torch.testing.assert_close(after_along, before_along.clamp(max=cap), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after - after_along[:, None] * unit, h - before_along[:, None] * unit,
                               rtol=1e-5, atol=1e-5)


def test_steering_changes_its_hook_and_nothing_else(model: HookedTransformer, prompt: Tensor) -> None:
    """Every hook of the steered run equals a run whose one hook is overwritten with h + c d: the steer touches
    nothing but that hook (hooks upstream of it are identical to the plain run's)."""
    direction = _direction(model, 5.0)
    plain = _hook_values(model, prompt, [])
    expected_at_hook = plain[direction.hook_name].clone()
    expected_at_hook[1] += 5.0 * direction.vector

    def overwrite(activation: Tensor, hook: object) -> Tensor:
        return expected_at_hook

    patched = _hook_values(model, prompt, [(direction.hook_name, overwrite)])
    steered = _hook_values(model, prompt, steering_hooks([direction], SteerMethod.SIMPLE_ADDITIVE))  # type: ignore[arg-type]
    assert steered.keys() == patched.keys()
    for name in steered:
        assert torch.equal(steered[name], patched[name]), name
    assert torch.equal(steered["blocks.0.hook_resid_mid"], plain["blocks.0.hook_resid_mid"])
    assert not torch.equal(steered[OTHER_HOOK][1], plain[OTHER_HOOK][1])


def test_directions_at_several_hooks_each_act_at_their_own(model: HookedTransformer, prompt: Tensor) -> None:
    first, second = _direction(model, 2.0), _direction(model, -3.0, OTHER_HOOK, seed=1)
    twice = steering_hooks([first, second], SteerMethod.SIMPLE_ADDITIVE)
    assert [name for name, _ in twice] == [factories.TINY_HOOK, OTHER_HOOK]
    only_first = _hook_values(model, prompt, steering_hooks([first], SteerMethod.SIMPLE_ADDITIVE))  # type: ignore[arg-type]
    both = _hook_values(model, prompt, twice)  # type: ignore[arg-type]
    assert torch.equal(both[factories.TINY_HOOK], only_first[factories.TINY_HOOK])
    assert torch.equal(both[OTHER_HOOK][1], only_first[OTHER_HOOK][1] - 3.0 * second.vector)


def test_a_hook_z_direction_steers_the_heads_flattened(model: HookedTransformer, prompt: Tensor) -> None:
    width = model.cfg.n_heads * model.cfg.d_head
    direction = steering_direction(torch.arange(width, dtype=torch.float32), 0.5, "blocks.0.attn.hook_z", False)
    plain = _hook_values(model, prompt, [])["blocks.0.attn.hook_z"]  # [2, T, n_heads, d_head]
    steered = _hook_values(model, prompt, steering_hooks([direction], SteerMethod.SIMPLE_ADDITIVE))  # type: ignore[arg-type]
    expected = plain[1].flatten(-2) + 0.5 * direction.vector
    assert torch.equal(steered["blocks.0.attn.hook_z"][1], expected.reshape(plain[1].shape))


def _same(first: Completion, second: Completion) -> bool:
    return (np.array_equal(first.token_ids, second.token_ids) and np.array_equal(first.logprobs, second.logprobs)
            and np.array_equal(first.top_ids, second.top_ids))


@pytest.mark.parametrize("method", [SteerMethod.SIMPLE_ADDITIVE, SteerMethod.PROJECTION_CAP])
def test_a_direction_that_does_nothing_gives_steered_equal_to_default(model: HookedTransformer, prompt: Tensor,
                                                                       method: SteerMethod) -> None:
    """Strength 0 (additive), or a cap no position reaches: both rows get the same tokens and log-probs."""
    coefficient = 0.0 if method is SteerMethod.SIMPLE_ADDITIVE else 1e6
    result = steer_generate(model, prompt, [_direction(model, coefficient)], method,
                            GenerationParams(n_tokens=16, temperature=1.0, seed=5))
    assert _same(result.default, result.steered)
    assert len(result.default.token_ids) == 16


def test_a_strong_direction_changes_the_steered_text_only(model: HookedTransformer, prompt: Tensor) -> None:
    params = GenerationParams(n_tokens=12, temperature=0)
    result = steer_generate(model, prompt, [_direction(model, STRONG)], SteerMethod.SIMPLE_ADDITIVE, params)
    alone = plain_generate(model, prompt, params)
    assert result.default.token_ids.tolist() == alone.token_ids.tolist()
    np.testing.assert_allclose(result.default.logprobs, alone.logprobs, rtol=1e-5, atol=1e-5)  # batch 2 vs 1
    assert not np.array_equal(result.steered.token_ids, result.default.token_ids)


def test_the_same_seed_gives_the_same_texts_and_another_seed_others(model: HookedTransformer,
                                                                     prompt: Tensor) -> None:
    def run(seed: int) -> tuple[Completion, Completion]:
        result = steer_generate(model, prompt, [_direction(model, STRONG)], SteerMethod.SIMPLE_ADDITIVE,
                                GenerationParams(n_tokens=16, temperature=1.0, seed=seed))
        return result.default, result.steered

    first, again, other = run(11), run(11), run(12)
    assert _same(first[0], again[0]) and _same(first[1], again[1])
    assert not np.array_equal(first[0].token_ids, other[0].token_ids)
    assert not np.array_equal(first[1].token_ids, other[1].token_ids)


def _reference_greedy(model: HookedTransformer, prompt: Tensor, n_tokens: int, freq_penalty: float,
                      hooks: list[tuple[str, HookFunction]] | None = None) -> list[int]:
    """Greedy decoding written out: the full sequence each step, argmax of logits less penalty x count."""
    sequence = prompt.clone()
    counts = torch.zeros(model.cfg.d_vocab)
    chosen: list[int] = []
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks or []):  # type: ignore[arg-type]
        for _ in range(n_tokens):
            logits = model(sequence)[0, -1]
            token = int((logits - freq_penalty * counts).argmax())
            counts[token] += 1
            chosen.append(token)
            sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
    return chosen


def test_temperature_zero_is_greedy(model: HookedTransformer, prompt: Tensor) -> None:
    completion = plain_generate(model, prompt, GenerationParams(n_tokens=12, temperature=0, seed=1))
    assert completion.token_ids.tolist() == _reference_greedy(model, prompt, 12, 0.0)
    assert np.array_equal(completion.top_ids[:, 0], completion.token_ids)
    np.testing.assert_array_equal(completion.top_logprobs[:, 0], completion.logprobs)
    assert (np.diff(completion.top_logprobs, axis=1) <= 0).all()


def test_freq_penalty_subtracts_penalty_times_count_from_the_logits(model: HookedTransformer,
                                                                    prompt: Tensor) -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    counts = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
    torch.testing.assert_close(adjusted_logits(logits, counts, 0.5),
                               torch.tensor([[1.0, 1.5, 1.5], [-0.5, 0.5, 0.5]]))
    # Steered this hard the tiny model says one token over and over, which the penalty must break up.
    hooks = steering_hooks([_direction(model, STRONG)], SteerMethod.SIMPLE_ADDITIVE, rows=slice(None))
    repeating = _reference_greedy(model, prompt, 24, 0.0, hooks)
    penalized = _reference_greedy(model, prompt, 24, 0.5, hooks)
    assert len(set(repeating)) < len(set(penalized))
    params = GenerationParams(n_tokens=24, temperature=0, freq_penalty=0.5)
    assert generate_rows(model, prompt, hooks, params)[0].token_ids.tolist() == penalized


def test_sampling_follows_the_softmax_of_the_penalized_logits_over_temperature() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    counts = torch.tensor([[3.0, 0.0, 1.0, 0.0]])
    params = GenerationParams(n_tokens=1, temperature=0.7, freq_penalty=0.4)
    generator = torch.Generator().manual_seed(0)
    draws = torch.stack([next_tokens(logits, counts, params, generator) for _ in range(20_000)])[:, 0]
    frequencies = torch.bincount(draws, minlength=4).float() / len(draws)
    expected = torch.softmax((logits[0] - 0.4 * counts[0]) / 0.7, dim=-1)
    torch.testing.assert_close(frequencies, expected, rtol=0, atol=0.015)


def test_rows_with_the_same_logits_draw_the_same_token() -> None:
    logits = torch.randn(1, 50).repeat(2, 1)
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        chosen = next_tokens(logits, torch.zeros(2, 50), GenerationParams(n_tokens=1), generator)
        assert chosen[0] == chosen[1]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_the_batch_of_two_over_the_kv_cache_equals_each_row_alone_without_it(
    model: HookedTransformer, prompt: Tensor, temperature: float
) -> None:
    direction = _direction(model, STRONG)
    params = GenerationParams(n_tokens=20, temperature=temperature, freq_penalty=0.3, seed=7)
    together = steer_generate(model, prompt, [direction], SteerMethod.SIMPLE_ADDITIVE, params)
    default_alone = generate_rows(model, prompt, [], params, use_cache=False)[0]
    steered_alone = generate_rows(model, prompt, steering_hooks([direction], SteerMethod.SIMPLE_ADDITIVE,
                                                                rows=slice(None)), params, use_cache=False)[0]
    for batched, alone in ((together.default, default_alone), (together.steered, steered_alone)):
        assert batched.token_ids.tolist() == alone.token_ids.tolist()
        np.testing.assert_allclose(batched.logprobs, alone.logprobs, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(batched.top_logprobs, alone.top_logprobs, rtol=1e-4, atol=1e-4)
    assert together.default.token_ids.tolist() != together.steered.token_ids.tolist()


def test_a_row_stops_at_eos_and_the_other_goes_on(model: HookedTransformer, prompt: Tensor) -> None:
    """Steering the last residual along EOS's unembedding makes the steered row say EOS at once."""
    eos = model.tokenizer.eos_token_id
    direction = steering_direction(model.W_U[:, eos].detach(), 1000.0, OTHER_HOOK, normalize=True)
    result = steer_generate(model, prompt, [direction], SteerMethod.SIMPLE_ADDITIVE,
                            GenerationParams(n_tokens=10, temperature=0))
    assert result.steered.token_ids.tolist() == [eos]
    assert result.steered.logprobs.shape == (1,) and result.steered.top_ids.shape == (1, 5)
    assert len(result.default.token_ids) == 10 and eos not in result.default.token_ids.tolist()


def test_refused_steers_say_what_to_change(model: HookedTransformer, prompt: Tensor) -> None:
    generous = GenerationParams(n_tokens=model.cfg.n_ctx)
    with pytest.raises(SteeringError, match="shorten the prompt"):
        steer_generate(model, prompt, [], SteerMethod.SIMPLE_ADDITIVE, generous)
    with pytest.raises(SteeringError, match=r"no hook 'blocks\.9\.hook_resid_post'"):
        steer_generate(model, prompt, [_direction(model, 1.0, "blocks.9.hook_resid_post")],
                       SteerMethod.SIMPLE_ADDITIVE, GenerationParams(n_tokens=2))
    narrow = SteerDirection(factories.TINY_HOOK, torch.ones(3), 1.0)
    with pytest.raises(SteeringError, match=f"{model.cfg.d_model} wide"):
        steer_generate(model, prompt, [narrow], SteerMethod.SIMPLE_ADDITIVE, GenerationParams(n_tokens=2))
    with pytest.raises(SteeringError, match="NaN"):
        steering_direction(torch.tensor([1.0, float("nan")]), 1.0, factories.TINY_HOOK, normalize=False)
    with pytest.raises(SteeringError, match="zero"):
        steering_direction(torch.zeros(4), 1.0, factories.TINY_HOOK, normalize=False)


# The worker step, on SAEs stored as uploads store them.

def _request(language_model: LanguageModel, sae_id: int, **fields: object) -> SteerRequest:
    request: SteerRequest = {
        "language_model_id": language_model.pk, "prompt": PROMPT, "chat": None, "features": [
            {"sae_id": sae_id, "index": 3, "strength": 20.0}], "vectors": [], "steer_method": "SIMPLE_ADDITIVE",
        "strength_multiplier": 2.0, "normalize_steering": False, "n_tokens": 8, "temperature": 0.0,
        "freq_penalty": 0.0, "seed": 16, "top_logprobs": 3,
    }
    return request | fields  # type: ignore[return-value]


@pytest.fixture
def stored_sae_id(language_model: LanguageModel, media_root: Path) -> int:
    factories.sae_lens_write(media_root / "saes" / "steer", d_in=language_model.d_model)
    return factories.sae_make(language_model, slug="0-res-steer", d_sae=48, files_dir="saes/steer").pk


def test_the_worker_step_steers_with_the_decoder_row_times_strength_and_multiplier(
    language_model: LanguageModel, stored_sae_id: int, media_root: Path, model: HookedTransformer
) -> None:
    answer = steer_compute(_request(language_model, stored_sae_id))
    assert "error" not in answer, answer
    row = sae_load(media_root / "saes" / "steer").W_dec[3]
    expected = steer_generate(model, text_tokens(model, PROMPT),
                              [SteerDirection(factories.TINY_HOOK, row, 40.0)], SteerMethod.SIMPLE_ADDITIVE,
                              GenerationParams(n_tokens=8, temperature=0, seed=16, top_logprobs=3))
    tokenizer = model.tokenizer
    for payload, completion in ((answer["default"], expected.default), (answer["steered"], expected.steered)):
        assert [token["tokenId"] for token in payload["tokens"]] == completion.token_ids.tolist()
        np.testing.assert_allclose([token["logprob"] for token in payload["tokens"]], completion.logprobs,
                                   rtol=1e-5, atol=1e-5)
        assert [token["token"] for token in payload["tokens"]] == [tokenizer.decode([t])
                                                                  for t in completion.token_ids.tolist()]
        assert [len(token["topLogprobs"]) for token in payload["tokens"]] == [3] * 8
        assert payload["text"] == tokenizer.decode(text_tokens(model, PROMPT)[0, 1:].tolist()
                                                   + completion.token_ids.tolist())
        assert payload["text"].startswith(PROMPT)
    assert answer["promptTokenIds"] == text_tokens(model, PROMPT)[0].tolist()


def test_the_worker_step_refuses_a_feature_the_sae_lacks(language_model: LanguageModel,
                                                         stored_sae_id: int) -> None:
    request = _request(language_model, stored_sae_id, features=[{"sae_id": stored_sae_id, "index": 48,
                                                                  "strength": 1.0}])
    assert steer_compute(request) == {"error": "SAE 0-res-steer has features 0 to 47; there is no feature 48."}


def test_the_worker_step_refuses_a_vector_of_the_wrong_width(language_model: LanguageModel,
                                                            stored_sae_id: int) -> None:
    request = _request(language_model, stored_sae_id, features=[], vectors=[
        {"hook_name": factories.TINY_HOOK, "vector": [1.0, 2.0], "strength": 1.0}])
    answer = steer_compute(request)
    assert "error" in answer and "give a vector of that width" in answer["error"]


def test_a_live_worker_process_answers_the_steer_task_as_the_step_does(workers: Workers, media_root: Path) -> None:
    """The task by name on the live queue, as the web will send it, to a `make live-worker`-like process."""
    language_model = factories.language_model_make()
    factories.sae_lens_write(media_root / "saes" / "steer", d_in=language_model.d_model)
    sae = factories.sae_make(language_model, slug="0-res-steer", d_sae=48, files_dir="saes/steer")
    workers.start(live_only=True)
    request = _request(language_model, sae.pk, temperature=1.0)
    result = celery_app.send_task("workers.tasks.steer_generate", args=[request], queue=settings.ATLAS_LIVE_QUEUE)
    answer = result.get(timeout=factories.RUN_TIMEOUT_SECONDS)
    assert answer == steer_compute(request)
    assert answer["steered"]["tokens"] != answer["default"]["tokens"]
