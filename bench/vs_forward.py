"""Atlas's full dashboard pass against the bare forward-to-hook + SAE encode over the same tokens.

The bare pass is the physical limit: any dashboard needs at least one forward to the hook and one
encode per token. Prints both times, the ratio, and `RESULT dashboard_vs_forward=<ratio>`.
Default case: SmolLM2-135M, blocks.5.hook_resid_post, a random 4096-feature SAE with b_enc set so the
mean L0 is about 64, 64 x 128 tokens of standard-library docstrings.
"""

import argparse
import statistics

import numpy as np
import numpy.typing as npt
import torch

from bench.cases import (
    SMOLLM2_HOOK,
    bare_forward_encode,
    docstring_tokens,
    random_sae,
    smollm2_model,
    timed,
)
from workers.compute.dashboard import dashboards_compute
from workers.compute.results import DashboardParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--d-sae", type=int, default=4096)
    parser.add_argument("--l0", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = smollm2_model()
    token_array: npt.NDArray[np.int32] = docstring_tokens(args.sequences, args.context)
    tokens = torch.from_numpy(token_array.astype(np.int64))
    params = DashboardParams()
    with torch.inference_mode():
        sae = random_sae(model, tokens, SMOLLM2_HOOK, args.d_sae, args.l0)

        def bare() -> None:
            bare_forward_encode(model, sae, tokens, SMOLLM2_HOOK, params.batch_size)

        def dashboards() -> None:
            dashboards_compute(model, sae, token_array, SMOLLM2_HOOK, params)

        bare()  # warm-up: allocator, kernels
        bare_times = timed(bare, args.repeats)
        dashboard_times = timed(dashboards, args.repeats)
    bare_s, dashboard_s = statistics.median(bare_times), statistics.median(dashboard_times)
    case = f"{args.sequences} x {args.context} tokens, d_sae {args.d_sae}, L0 ~{args.l0}"
    print(f"{case}, {torch.get_num_threads()} threads")
    print(f"bare forward-to-hook + encode: {bare_s:.2f} s (median of {args.repeats})")
    print(f"full dashboard pass:           {dashboard_s:.2f} s (median of {args.repeats})")
    print(f"RESULT dashboard_vs_forward={dashboard_s / bare_s:.2f}")


if __name__ == "__main__":
    main()
