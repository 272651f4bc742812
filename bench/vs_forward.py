"""Atlas's full dashboard pass against the bare forward-to-hook + SAE encode over the same tokens.

The bare pass is the physical limit: any dashboard needs at least one forward to the hook and one
encode per token. Prints both times, the ratio, and `RESULT dashboard_vs_forward=<ratio>`.
Default case: SmolLM2-135M, blocks.5.hook_resid_post, a random 4096-feature SAE with b_enc set so the
mean L0 is about 64, 64 x 128 tokens of standard-library docstrings.
"""

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from transformer_lens import HookedTransformer

from workers.compute.builtin_models import smollm2_convert
from workers.compute.corpus import stdlib_docstrings, tokenize_into_sequences
from workers.compute.dashboard import dashboards_compute
from workers.compute.language_model import load_language_model
from workers.compute.model_source import ModelSource, load_tokenizer
from workers.compute.results import DashboardParams
from workers.compute.sae import SaeConfig, SparseAutoencoder

ROOT = Path(__file__).resolve().parents[1]
HOOK = "blocks.5.hook_resid_post"


def _random_sae(model: HookedTransformer, tokens: torch.Tensor, d_sae: int, target_l0: int) -> SparseAutoencoder:
    """Random encoder; b_enc puts each feature's threshold at the quantile that gives the target L0."""
    d_model = model.cfg.d_model
    generator = torch.Generator().manual_seed(0)
    w_enc = torch.randn(d_model, d_sae, generator=generator) / d_model**0.5
    w_dec = torch.randn(d_sae, d_model, generator=generator) / d_model**0.5
    sample = _hook_acts(model, tokens[:8]).reshape(-1, d_model)
    b_enc = -(sample @ w_enc).quantile(1 - target_l0 / d_sae, dim=0)
    config = SaeConfig("standard", d_model, d_sae, HOOK, False, "float32", {})
    return SparseAutoencoder(config, {"W_enc": w_enc, "W_dec": w_dec, "b_enc": b_enc, "b_dec": torch.zeros(d_model)})


def _hook_acts(model: HookedTransformer, tokens: torch.Tensor) -> torch.Tensor:
    captured: list[torch.Tensor] = []
    model.run_with_hooks(tokens, fwd_hooks=[(HOOK, lambda act, hook: captured.append(act))],
                         stop_at_layer=int(HOOK.split(".")[1]) + 1, return_type=None)
    return captured[0]


def _timed(function: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--l0", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    source = ModelSource("hf_local", str(smollm2_convert(ROOT / "var" / "models" / "smollm2-135m-instruct")))
    model = load_language_model(source)
    token_array: npt.NDArray[np.int32] = tokenize_into_sequences(
        load_tokenizer(source), stdlib_docstrings(2_000_000), args.context, max_sequences=args.sequences
    )
    tokens = torch.from_numpy(token_array.astype(np.int64))
    params = DashboardParams()
    with torch.inference_mode():
        sae = _random_sae(model, tokens, args.d_sae, args.l0)

        def bare() -> None:
            for start in range(0, len(tokens), params.batch_size):
                sae.encode(_hook_acts(model, tokens[start : start + params.batch_size]))

        def dashboards() -> None:
            dashboards_compute(model, sae, token_array, HOOK, params)

        bare()  # warm-up: allocator, kernels
        bare_times = _timed(bare, args.repeats)
        dashboard_times = _timed(dashboards, args.repeats)
    bare_s, dashboard_s = statistics.median(bare_times), statistics.median(dashboard_times)
    case = f"{args.sequences} x {args.context} tokens, d_sae {args.d_sae}, L0 ~{args.l0}"
    print(f"{case}, {torch.get_num_threads()} threads")
    print(f"bare forward-to-hook + encode: {bare_s:.2f} s (median of {args.repeats})")
    print(f"full dashboard pass:           {dashboard_s:.2f} s (median of {args.repeats})")
    print(f"RESULT dashboard_vs_forward={dashboard_s / bare_s:.2f}")


if __name__ == "__main__":
    main()
