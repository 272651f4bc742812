"""Chat steering on the tiny model's chat template: steer_special_tokens false leaves the template's special-token
positions as the plain model has them, and two conversations generate as each would alone."""

import numpy as np
import pytest
import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from tests import factories
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.steer_types import ChatMessage
from workers.compute.steering import (
    Completion,
    ForwardTokens,
    GenerationParams,
    SteerDirection,
    SteerMethod,
    generate_rows,
    plain_generate,
    steer_generate,
    steer_generate_apart,
    steering_direction,
    steering_hooks,
)
from workers.steer import chat_tokens

DEFAULT_CHAT: list[ChatMessage] = [{"role": "user", "content": "Return the number of items in a container."}]
STEERED_CHAT: list[ChatMessage] = [{"role": "system", "content": "Answer briefly."},
                                   {"role": "user", "content": "Sort the list in place."}]
# Large enough against the tiny model's residual (norm about 8) to change what it says.
STRONG = 40.0
PARAMS = GenerationParams(n_tokens=16, temperature=1.0, freq_penalty=0.5, seed=7)


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return load_language_model(ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir())))


@pytest.fixture(scope="module")
def special_ids(model: HookedTransformer) -> list[int]:
    """What the worker leaves unsteered when steer_special_tokens is false."""
    assert model.tokenizer is not None
    ids: list[int] = model.tokenizer.all_special_ids
    return ids


def _direction(model: HookedTransformer, coefficient: float = STRONG) -> SteerDirection:
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    return steering_direction(vector, coefficient, factories.TINY_HOOK, normalize=True)


def _same(first: Completion, second: Completion) -> bool:
    return (np.array_equal(first.token_ids, second.token_ids) and np.array_equal(first.logprobs, second.logprobs)
            and np.array_equal(first.top_ids, second.top_ids)
            and np.array_equal(first.top_logprobs, second.top_logprobs))


def test_the_chat_template_puts_special_tokens_in_the_prompt(model: HookedTransformer,
                                                             special_ids: list[int]) -> None:
    """The premise of the tests below: a conversation holds special tokens (each turn's BOS and EOS) and others."""
    assert model.tokenizer is not None
    tokens = chat_tokens(model, STEERED_CHAT)[0].tolist()
    special = [token for token in tokens if token in special_ids]
    assert special.count(model.tokenizer.bos_token_id) == 3  # system, user, and the assistant's opened turn
    assert special.count(model.tokenizer.eos_token_id) == 2
    assert len(special) < len(tokens)


def test_unsteered_special_tokens_keep_their_plain_values_at_the_hook(model: HookedTransformer,
                                                                      special_ids: list[int]) -> None:
    direction = _direction(model, 5.0)
    tokens = chat_tokens(model, STEERED_CHAT).repeat(2, 1)  # [2, T]: DEFAULT row, STEERED row
    forward_tokens = ForwardTokens(special_ids)
    forward_tokens.tokens = tokens
    hooks = steering_hooks([direction], SteerMethod.SIMPLE_ADDITIVE, forward_tokens=forward_tokens)
    with torch.inference_mode():
        _, plain = model.run_with_cache(tokens)
        with model.hooks(fwd_hooks=hooks):
            _, steered = model.run_with_cache(tokens)
    special = torch.isin(tokens[1], torch.tensor(special_ids))  # [T]
    h, after = plain[direction.hook_name][1], steered[direction.hook_name][1]  # [T, d]
    assert torch.equal(after[special], h[special])
    assert torch.equal(after[~special], h[~special] + 5.0 * direction.vector)
    assert torch.equal(steered[direction.hook_name][0], plain[direction.hook_name][0])  # DEFAULT row untouched


def test_steering_special_tokens_too_steers_every_position(model: HookedTransformer) -> None:
    """The contrast: without forward_tokens (steer_special_tokens true) the special positions move as well."""
    direction = _direction(model, 5.0)
    tokens = chat_tokens(model, STEERED_CHAT).repeat(2, 1)
    with torch.inference_mode():
        _, plain = model.run_with_cache(tokens)
        with model.hooks(fwd_hooks=steering_hooks([direction], SteerMethod.SIMPLE_ADDITIVE)):
            _, steered = model.run_with_cache(tokens)
    assert torch.equal(steered[direction.hook_name][1], plain[direction.hook_name][1] + 5.0 * direction.vector)


def test_unsteered_special_tokens_change_what_is_generated(model: HookedTransformer,
                                                           special_ids: list[int]) -> None:
    prompt = chat_tokens(model, STEERED_CHAT)
    every = steer_generate(model, prompt, [_direction(model)], SteerMethod.SIMPLE_ADDITIVE, PARAMS)
    but_special = steer_generate(model, prompt, [_direction(model)], SteerMethod.SIMPLE_ADDITIVE, PARAMS,
                                 unsteered_ids=special_ids)
    assert _same(every.default, but_special.default)
    # The random tiny model reads little of its context, so the change is small (1.1e-4 at most in the first token's
    # top log-probs, measured), but far above float32 noise at these magnitudes (about 6).
    first_step = np.abs(every.steered.top_logprobs[0] - but_special.steered.top_logprobs[0]).max()
    assert first_step > 1e-5, first_step


def test_two_equal_conversations_generate_as_one_steer(model: HookedTransformer, special_ids: list[int]) -> None:
    prompt = chat_tokens(model, STEERED_CHAT)
    for unsteered in ([], special_ids):
        apart = steer_generate_apart(model, prompt, prompt.clone(), [_direction(model)],
                                     SteerMethod.SIMPLE_ADDITIVE, PARAMS, unsteered)
        together = steer_generate(model, prompt, [_direction(model)], SteerMethod.SIMPLE_ADDITIVE, PARAMS, unsteered)
        assert _same(apart.default, together.default) and _same(apart.steered, together.steered)
        assert apart.prompt_tokens.tolist() == apart.default_prompt_tokens.tolist() == prompt[0].tolist()


def _steered_alone(model: HookedTransformer, prompt: Tensor, direction: SteerDirection,
                   unsteered: list[int]) -> Completion:
    """STEERED of a prompt by itself: one row, every row steered, its special positions left as they are."""
    forward_tokens = ForwardTokens(unsteered) if unsteered else None
    hooks = steering_hooks([direction], SteerMethod.SIMPLE_ADDITIVE, rows=slice(None), forward_tokens=forward_tokens)
    return generate_rows(model, prompt, hooks, PARAMS, forward_tokens=forward_tokens)[0]


@pytest.mark.parametrize("steer_special_tokens", [True, False])
def test_two_conversations_each_generate_as_they_would_alone(model: HookedTransformer, special_ids: list[int],
                                                             steer_special_tokens: bool) -> None:
    unsteered = [] if steer_special_tokens else special_ids
    default_prompt, steered_prompt = chat_tokens(model, DEFAULT_CHAT), chat_tokens(model, STEERED_CHAT)
    assert default_prompt.shape != steered_prompt.shape  # so they cannot be one batch
    direction = _direction(model)
    result = steer_generate_apart(model, default_prompt, steered_prompt, [direction], SteerMethod.SIMPLE_ADDITIVE,
                                  PARAMS, unsteered)
    assert _same(result.default, plain_generate(model, default_prompt, PARAMS))
    assert _same(result.steered, _steered_alone(model, steered_prompt, direction, unsteered))
    assert (result.default_prompt_tokens.tolist(), result.prompt_tokens.tolist()) == (
        default_prompt[0].tolist(), steered_prompt[0].tolist())
    # The steered side really is steered: unsteered, the same conversation says something else.
    assert not _same(result.steered, plain_generate(model, steered_prompt, PARAMS))
