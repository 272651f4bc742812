"""One steer (DEFAULT + STEERED as one batch of two over the KV cache) against one plain generation of the same
length, by the same generation loop (workers.compute.steering), in the same process.

The goal is both texts for little more than the price of one: `RESULT steer_vs_generate=<ratio>` at most 1.3.
Default case: SmolLM2-135M-Instruct, the demo SAE (demo/sae/, blocks.5.hook_resid_post), one feature at
strength 8 x multiplier 1, 32 new tokens sampled at temperature 1 with EOS ignored, so every run makes 32.
The two are timed in turn, repeat by repeat, and the ratio is the median of each back-to-back pair's, so drift in
the machine's speed (a shared machine's load) hits both sides of every ratio; the median times are printed too.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.cases import SMOLLM2_HOOK, smollm2_model
from workers.compute.live import text_tokens
from workers.compute.sae import sae_load
from workers.compute.steering import (
    GenerationParams,
    SteerMethod,
    plain_generate,
    steer_generate,
    steering_direction,
)

DEMO_SAE_DIR = Path(__file__).resolve().parents[1] / "demo" / "sae"
PROMPT = "When I woke up this morning, I felt"


def _seconds(function: Callable[[], object], synchronize: Callable[[], None]) -> float:
    synchronize()
    start = time.perf_counter()
    function()
    synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-tokens", type=int, default=32)
    parser.add_argument("--feature", type=int, default=0)
    parser.add_argument("--strength", type=float, default=8.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    model = smollm2_model().to(args.device)
    sae = sae_load(DEMO_SAE_DIR, device=args.device)
    hook_name = sae.config.hook_name or SMOLLM2_HOOK
    direction = steering_direction(sae.W_dec[args.feature], args.strength, hook_name, normalize=False)
    prompt = text_tokens(model, PROMPT)
    params = GenerationParams(n_tokens=args.n_tokens, temperature=1.0, seed=16, stop_at_eos=False)
    synchronize = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    def steer() -> None:
        steer_generate(model, prompt, [direction], SteerMethod.SIMPLE_ADDITIVE, params)

    def generate() -> None:
        plain_generate(model, prompt, params)

    steer()  # warm-up: allocator, kernels
    generate()
    steer_times, generate_times = [], []
    for _ in range(args.repeats):
        generate_times.append(_seconds(generate, synchronize))
        steer_times.append(_seconds(steer, synchronize))
    steer_s, generate_s = statistics.median(steer_times), statistics.median(generate_times)
    example = steer_generate(model, prompt, [direction], SteerMethod.SIMPLE_ADDITIVE, params)
    assert model.tokenizer is not None
    print(f"SmolLM2-135M-Instruct on {args.device}, {torch.get_num_threads()} threads; demo SAE {hook_name}, "
          f"feature {args.feature} at {args.strength:g}; prompt {prompt.shape[1]} tokens, {args.n_tokens} new")
    print(f"DEFAULT: {PROMPT + model.tokenizer.decode(example.default.token_ids.tolist())!r}")
    print(f"STEERED: {PROMPT + model.tokenizer.decode(example.steered.token_ids.tolist())!r}")
    print(f"plain generation (1 row):         {generate_s:.3f} s (median of {args.repeats})")
    print(f"steer (DEFAULT + STEERED, 2 rows): {steer_s:.3f} s (median of {args.repeats})")
    ratios = [steer / generate for steer, generate in zip(steer_times, generate_times, strict=True)]
    print(f"pairwise ratios: {', '.join(f'{ratio:.2f}' for ratio in ratios)}")
    print(f"RESULT steer_vs_generate={statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
