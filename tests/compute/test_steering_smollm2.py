"""Steering has a real effect on a real model: the demo SAE's happiness feature (402) added at its hook makes
SmolLM2-135M-Instruct's next-token distribution put far more mass on happiness words than the unsteered model does."""

import pytest
import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from bench.cases import SMOLLM2_HOOK, smollm2_model
from bench.steer import DEMO_SAE_DIR
from workers.compute.live import text_tokens
from workers.compute.sae import sae_load
from workers.compute.steering import (
    Completion,
    GenerationParams,
    HookFunction,
    SteerMethod,
    steer_generate,
    steering_direction,
    steering_hooks,
)

pytestmark = pytest.mark.slow

HAPPINESS_FEATURE = 402
# Among the words feature 402 fires on most in the demo SAE's training text (on "I was so happy, full of joy and
# happiness. We were glad and cheerful." it reads 19.6 on " happy", 17.7 " joy", 20.6 " happiness", 6.2 " glad",
# 10.6 " cheerful" and 0 on every other token); each one token in SmolLM2's vocabulary.
HAPPINESS_WORDS = (" happy", " happiness", " joy", " glad", " cheerful", " joyful", " delighted", " Happy",
                   " happily", " joyous")
PROMPTS = ("When I woke up this morning, I felt", "The weather today is")
# The decoder row has norm 1 and the residual at blocks.5 about 100: at 40 the steered text stays fluent
# ("I felt so happy.\n\nI'm not sure if I'm happy, ..."); at 80 it is "happy happy happy ...".
STRENGTH = 40.0
PARAMS = GenerationParams(n_tokens=16, temperature=0, seed=16)
# Measured on the project's 2-CPU machine (greedy, 16 tokens): steered minus default mean log-mass of HAPPINESS_WORDS
# per generated position, in nats: 4.33 ("When I woke up ...": -6.33 against -10.66) and 3.99 ("The weather today
# is": -5.87 against -9.87), mean 4.16. Asserted: below half of each.
LEAST_MARGIN_NATS = 1.9
MEAN_MARGIN_NATS = 2.0


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return smollm2_model()


def _happiness_ids(model: HookedTransformer) -> Tensor:
    assert model.tokenizer is not None
    encoded = [model.tokenizer.encode(word, add_special_tokens=False) for word in HAPPINESS_WORDS]
    assert all(len(ids) == 1 for ids in encoded), encoded
    return torch.tensor([ids[0] for ids in encoded])


def _happiness_log_mass(model: HookedTransformer, prompt: Tensor, completion: Completion,
                        hooks: list[tuple[str, HookFunction]], happiness_ids: Tensor) -> float:
    """The mean, over the generated positions, of log P(any happiness word next) under the distribution the tokens
    were generated from (the model with the hooks on)."""
    tokens = torch.cat([prompt, torch.from_numpy(completion.token_ids)[None]], dim=1)  # [1, T + n]
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        logits = model(tokens)[0, prompt.shape[1] - 1: -1]  # [n, V]: each generated token's distribution
    return float(logits.log_softmax(dim=-1)[:, happiness_ids].logsumexp(dim=-1).mean())


def test_the_happiness_feature_raises_the_log_probability_of_happiness_words(model: HookedTransformer) -> None:
    sae = sae_load(DEMO_SAE_DIR)
    direction = steering_direction(sae.W_dec[HAPPINESS_FEATURE], STRENGTH, SMOLLM2_HOOK, normalize=False)
    steered_hooks = steering_hooks([direction], SteerMethod.SIMPLE_ADDITIVE, rows=slice(None))
    happiness_ids = _happiness_ids(model)
    assert model.tokenizer is not None
    margins = []
    for text in PROMPTS:
        prompt = text_tokens(model, text)
        result = steer_generate(model, prompt, [direction], SteerMethod.SIMPLE_ADDITIVE, PARAMS)
        steered = _happiness_log_mass(model, prompt, result.steered, steered_hooks, happiness_ids)
        default = _happiness_log_mass(model, prompt, result.default, [], happiness_ids)
        margins.append(steered - default)
        print(f"\n{text!r}: happiness log-mass per position steered {steered:.2f}, default {default:.2f}, "
              f"margin {steered - default:.2f} nats"
              f"\n  DEFAULT: {model.tokenizer.decode(result.default.token_ids.tolist())!r}"
              f"\n  STEERED: {model.tokenizer.decode(result.steered.token_ids.tolist())!r}")
    print(f"mean margin {sum(margins) / len(margins):.2f} nats")
    assert min(margins) > LEAST_MARGIN_NATS, margins
    assert sum(margins) / len(margins) > MEAN_MARGIN_NATS, margins
