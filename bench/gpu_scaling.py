"""GPU case: Atlas's dashboard throughput against the bare forward-to-hook + encode, and peak memory, at two sizes.

A GPT-2-small-shaped model (12 layers, d_model 768, vocabulary 50257, random weights) and a random
24,576-feature SAE with b_enc set so the mean L0 is about 64, over random token ids. For each token
count: bare forward+encode throughput, dashboards_compute throughput, their ratio, and the peak device
memory dashboards_compute allocated. Targets: at least 0.7x the bare throughput, and a peak memory that
stays flat (within 10%) as the token count grows. RESULT lines report the largest token count, and the
peak-memory ratio of the largest to the smallest.
Smoke check on CPU: --device cpu --tokens 4096 8192 --d-sae 512 --layers 2 (peak memory is then nan).
"""

import argparse
import math
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from bench.cases import bare_forward_encode, random_sae, timed
from workers.compute.dashboard import dashboards_compute
from workers.compute.params import DashboardParams
from workers.compute.sae import SparseAutoencoder

GPT2_VOCAB = 50257
D_HEAD = 64
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Sequences of the first token set run once through both passes before anything is timed.
WARMUP_SEQUENCES = 64


@dataclass(frozen=True)
class Measurement:
    """One token count: seconds of both passes and the dashboard pass's peak device memory (nan on CPU)."""

    tokens: int
    bare_s: float
    dashboard_s: float
    peak_bytes: float

    @property
    def bare_tokens_per_s(self) -> float:
        return self.tokens / self.bare_s

    @property
    def dashboard_tokens_per_s(self) -> float:
        return self.tokens / self.dashboard_s


def gpt2_shaped_model(layers: int, d_model: int, context: int, device: str, dtype: torch.dtype) -> HookedTransformer:
    config = HookedTransformerConfig(
        n_layers=layers, d_model=d_model, n_ctx=context, d_head=D_HEAD, n_heads=d_model // D_HEAD,
        d_mlp=4 * d_model, d_vocab=GPT2_VOCAB, act_fn="gelu_new", normalization_type="LN",
        device=device, dtype=dtype, seed=0,
    )
    return HookedTransformer(config).eval()


def random_tokens(n_tokens: int, context: int, seed: int) -> npt.NDArray[np.int32]:
    """[ceil(n_tokens / context), context] random token ids."""
    generator = np.random.default_rng(seed)
    return generator.integers(0, GPT2_VOCAB, size=(math.ceil(n_tokens / context), context), dtype=np.int32)


def measure(model: HookedTransformer, sae: SparseAutoencoder, tokens: npt.NDArray[np.int32], hook: str,
            params: DashboardParams, repeats: int) -> Measurement:
    cuda = sae.device.type == "cuda"
    synchronize = torch.cuda.synchronize if cuda else None
    token_tensor = torch.from_numpy(tokens.astype(np.int64))
    with torch.inference_mode():
        bare_s = min(timed(lambda: bare_forward_encode(model, sae, token_tensor, hook, params.batch_size),
                           repeats, synchronize))
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        dashboard_s = min(timed(lambda: dashboards_compute(model, sae, tokens, hook, params), repeats, synchronize))
    peak_bytes = float(torch.cuda.max_memory_allocated()) if cuda else math.nan
    return Measurement(tokens.size, bare_s, dashboard_s, peak_bytes)


def warm_up(model: HookedTransformer, sae: SparseAutoencoder, tokens: npt.NDArray[np.int32], hook: str,
            params: DashboardParams) -> None:
    """Kernel selection, allocator pools and lazy initialisation, outside every timing."""
    sample = tokens[:WARMUP_SEQUENCES]
    with torch.inference_mode():
        bare_forward_encode(model, sae, torch.from_numpy(sample.astype(np.int64)), hook, params.batch_size)
        dashboards_compute(model, sae, sample, hook, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32", help="model and SAE weights")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per forward, both passes")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--d-sae", type=int, default=24_576)
    parser.add_argument("--l0", type=int, default=64)
    parser.add_argument("--hook", help="default: blocks.<layers // 2>.hook_resid_post")
    parser.add_argument("--repeats", type=int, default=1, help="timings per token count (best reported)")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("CUDA is not available; for a smoke check pass --device cpu with small sizes")

    hook = args.hook or f"blocks.{args.layers // 2}.hook_resid_post"
    dtype = DTYPES[args.dtype]
    params = replace(DashboardParams(), batch_size=args.batch_size)
    model = gpt2_shaped_model(args.layers, args.d_model, args.context, args.device, dtype)
    token_sets = [random_tokens(n, args.context, seed) for seed, n in enumerate(args.tokens)]
    with torch.inference_mode():
        sae = random_sae(model, torch.from_numpy(token_sets[0].astype(np.int64)), hook, args.d_sae, args.l0, dtype)
    warm_up(model, sae, token_sets[0], hook, params)
    measurements = [measure(model, sae, tokens, hook, params, args.repeats) for tokens in token_sets]

    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"{device_name}, {args.dtype}: {args.layers} layers, d_model {args.d_model}, {hook}, d_sae {args.d_sae}, "
          f"target L0 {args.l0}, {args.batch_size} x {args.context} tokens per batch")
    for m in measurements:
        print(f"{m.tokens:>10,} tokens: bare {m.bare_tokens_per_s:>11,.0f} tokens/s, "
              f"Atlas {m.dashboard_tokens_per_s:>11,.0f} tokens/s ({m.dashboard_tokens_per_s / m.bare_tokens_per_s:.2f}"
              f"x bare), peak {m.peak_bytes / 2**30:.2f} GiB")
    first, last = measurements[0], measurements[-1]
    print(f"RESULT gpu_tokens_per_s={last.dashboard_tokens_per_s:.0f}")
    print(f"RESULT gpu_vs_forward={last.dashboard_tokens_per_s / last.bare_tokens_per_s:.2f}")
    print(f"RESULT gpu_peak_mem_ratio_4m_vs_1m={last.peak_bytes / first.peak_bytes:.3f}")


if __name__ == "__main__":
    main()
