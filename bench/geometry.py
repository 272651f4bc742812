"""The SAE geometry computations: the feature map (UMAP + clustering) at growing sizes, and cross-SAE neighbours
against the plain matmul of the two decoders.

Feature map: random decoders of d_in 576 (SmolLM2's width) at each --map-sizes; prints the seconds of each and
`RESULT feature_map_<F>_s=...`, then `RESULT feature_map_growth=<exponent>`, the slope of log time against log F
between the two largest sizes (1 is linear). UMAP's numba compilation is paid by a warm-up fit first.
Cluster limit 4,096 (see workers/compute/feature_maps.py): above it, a sample is clustered and the rest assigned.
Cross-SAE: --a x --b random features; the baseline is one `W_a @ W_b.T` of the unit rows in float32 (the
similarities alone, no ranking). Prints `RESULT cross_sae_vs_matmul=<ratio>` (goal: <= 1.5).

The full case (65,536 features, 16k x 65k) is for a large machine; on a small one pass smaller sizes, e.g.
`--map-sizes 1024 4096 --a 2048 --b 8192`.
"""

import argparse
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from bench.cases import timed
from workers.compute.cross_sae import cross_sae_neighbours
from workers.compute.feature_maps import feature_map

D_IN = 576


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--map-sizes", type=int, nargs="*", default=[4096, 16384, 65536])
    parser.add_argument("--a", type=int, default=16384)
    parser.add_argument("--b", type=int, default=65536)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.map_sizes:
        _feature_maps(args.map_sizes)
    if args.a and args.b:
        _cross_sae(args.a, args.b, torch.device(args.device), args.repeats)


def _decoder(n_features: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n_features, D_IN)).astype(np.float32)


def _feature_maps(sizes: list[int]) -> None:
    # numba compiles UMAP and (from 4,096 points, where UMAP stops computing exact neighbours) NN-descent
    # here, not in the first timed size: about a minute on a small machine.
    feature_map(np.random.default_rng(1).normal(size=(200, 8)), levels=(2,))
    feature_map(np.random.default_rng(1).normal(size=(4200, 8)), levels=(2,))
    seconds: list[float] = []
    for n_features in sizes:
        decoder = _decoder(n_features, seed=0)
        start = time.perf_counter()
        feature_map(decoder)
        seconds.append(time.perf_counter() - start)
        print(f"feature map of {n_features} features: {seconds[-1]:.1f} s")
        print(f"RESULT feature_map_{n_features}_s={seconds[-1]:.1f}")
    if len(sizes) >= 2:
        growth = math.log(seconds[-1] / seconds[-2]) / math.log(sizes[-1] / sizes[-2])
        print(f"RESULT feature_map_growth={growth:.2f}")


def _cross_sae(n_a: int, n_b: int, device: torch.device, repeats: int) -> None:
    generator = torch.Generator().manual_seed(0)
    W_a = torch.randn(n_a, D_IN, generator=generator).to(device)
    W_b = torch.randn(n_b, D_IN, generator=generator).to(device)
    unit_a = torch.nn.functional.normalize(W_a, dim=1)
    unit_b = torch.nn.functional.normalize(W_b, dim=1)
    synchronize: Callable[[], None] | None = torch.cuda.synchronize if device.type == "cuda" else None

    def matmul() -> None:
        with torch.inference_mode():
            unit_a @ unit_b.T

    def neighbours() -> None:
        cross_sae_neighbours(W_a, W_b, n=10)

    neighbours()  # warm-up: allocator, kernels
    matmul()
    ratios, matmul_times, neighbour_times = [], [], []
    for _ in range(repeats):
        matmul_times.append(timed(matmul, 1, synchronize)[0])
        neighbour_times.append(timed(neighbours, 1, synchronize)[0])
        ratios.append(neighbour_times[-1] / matmul_times[-1])
    print(f"cross-SAE {n_a} x {n_b} on {device}: neighbours {statistics.median(neighbour_times):.3f} s, "
          f"matmul {statistics.median(matmul_times):.3f} s")  # fmt: skip
    print(f"RESULT cross_sae_vs_matmul={statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
