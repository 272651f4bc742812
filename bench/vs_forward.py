"""Atlas's full dashboard pass against the bare forward-to-hook + SAE encode over the same tokens.

The bare pass is the physical limit: any dashboard needs at least one forward to the hook and one
encode per token. The two are timed in turn, repeat by repeat, so drift in the machine's speed hits
both. Prints both times, the ratio, and `RESULT dashboard_vs_forward=<ratio>`; also the part of the
pass that depends on the tokens (everything but the logit lens, W_dec @ W_U, 232 GFLOP here, and the
decoder-cosine neighbours, W_dec @ W_dec.T: fixed costs, whatever the number of tokens) as
`RESULT token_work_vs_forward=<ratio>`.
Default case: SmolLM2-135M, blocks.5.hook_resid_post, a random 4096-feature SAE with b_enc set so the
mean L0 is about 64, 64 x 128 tokens of standard-library docstrings.
"""

import argparse
import statistics
import time

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
from workers.compute.params import DashboardParams


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

        def dashboards() -> float:
            """The full pass; returns the seconds its logit lens and neighbours took, from the progress reports."""
            last_report: dict[str, float] = {}
            dashboards_compute(
                model, sae, token_array, SMOLLM2_HOOK, params,
                progress=lambda phase, done, total: last_report.__setitem__(phase, time.perf_counter()),
            )
            return last_report["neighbours"] - last_report["intervals"]

        bare()  # warm-up: allocator, kernels
        dashboards()
        bare_times, dashboard_times, logit_lens_times = [], [], []
        for _ in range(args.repeats):
            bare_times += timed(bare, 1)
            start = time.perf_counter()
            logit_lens_times.append(dashboards())
            dashboard_times.append(time.perf_counter() - start)
    bare_s, dashboard_s = statistics.median(bare_times), statistics.median(dashboard_times)
    logit_lens_s = statistics.median(logit_lens_times)
    case = f"{args.sequences} x {args.context} tokens, d_sae {args.d_sae}, L0 ~{args.l0}"
    print(f"{case}, {torch.get_num_threads()} threads")
    print(f"bare forward-to-hook + encode: {bare_s:.2f} s (median of {args.repeats})")
    print(f"full dashboard pass:           {dashboard_s:.2f} s (median of {args.repeats})")
    print(f"  of which fixed costs:        {logit_lens_s:.2f} s (logit lens W_dec @ W_U in float32, neighbours)")
    print(f"RESULT dashboard_vs_forward={dashboard_s / bare_s:.2f}")
    print(f"RESULT token_work_vs_forward={(dashboard_s - logit_lens_s) / bare_s:.2f}")
    print(f"RESULT fixed_cost_seconds={logit_lens_s:.2f}")

if __name__ == "__main__":
    main()
