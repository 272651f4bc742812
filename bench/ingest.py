"""Time to write a run's results into Postgres: run_results_publish against the ORM row-per-example writer.

Builds synthetic but realistic FeatureDashboards (default 24,576 features; top 20, 5 intervals x 5, window
33, logit tables of 10, histograms of 50 bins, 10 neighbours), then times, in a scratch database it creates and drops
(`atlas_bench_ingest` on DATABASE_URL's server, or on the embedded Postgres):
  - run_results_publish, the binary COPY of packed dashboards (median of --repeats; every repeat after the
    first also deletes the run it replaces, as a real re-run does);
  - the baseline, the bulk_create writer with one row per feature and one per example that Atlas used
    before, on --baseline-features features and scaled linearly to the full count (pass
    --baseline-features equal to --features to time it whole; it needs several GB of memory).
Prints both times, the ratio, and `RESULT ingest_seconds=...`, `RESULT ingest_speedup_vs_orm=...`.
"""

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.scratch import scratch_database
from workers.compute.params import DashboardParams
from workers.compute.results import Examples, FeatureDashboards

ROOT = Path(__file__).resolve().parents[1]
SCRATCH_DATABASE = "atlas_bench_ingest"
# SmolLM2's vocabulary and the demo's context length: token ids and windows of the size a real run has.
VOCABULARY = 49_152
CONTEXT = 128
N_SEQUENCES = 4_096
DEAD_SHARE = 0.05


def _top_values(rng: np.random.Generator, max_act: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.float32]:
    """[F, k] descending, the first equal to max_act."""
    shares = -np.sort(-rng.uniform(0.2, 1.0, (max_act.shape[0], k)), axis=1)
    shares[:, 0] = 1.0
    return (shares * max_act[:, None]).astype(np.float32)


def _interval_values(rng: np.random.Generator, max_act: npt.NDArray[np.float32], n_intervals: int,
                     per_interval: int) -> npt.NDArray[np.float32]:
    """[F, n, p] with interval i's values inside (i*max/n, (i+1)*max/n]."""
    position = rng.uniform(0.0, 1.0, (max_act.shape[0], n_intervals, per_interval))
    lower = np.arange(n_intervals)[None, :, None]
    return ((lower + 1 - position) / n_intervals * max_act[:, None, None]).astype(np.float32)


def _examples(rng: np.random.Generator, values: npt.NDArray[np.float32], filled: npt.NDArray[np.bool_],
              params: DashboardParams) -> Examples:
    """Windows around random positions: sparse activations below the example's, -1/NaN past the sequence."""
    seq = np.where(filled, rng.integers(0, N_SEQUENCES, values.shape), -1)
    pos = rng.integers(0, CONTEXT, values.shape)
    positions = pos[..., None] + np.arange(-params.context_before, params.context_after + 1)
    inside = filled[..., None] & (positions >= 0) & (positions < CONTEXT)
    tokens = np.where(inside, rng.integers(0, VOCABULARY, inside.shape), -1).astype(np.int32)
    # About one token in ten around an example also fires, never above the example itself.
    firing = rng.random(inside.shape, dtype=np.float32) < 0.1
    window = np.where(firing, rng.random(inside.shape, dtype=np.float32), np.float32(0.0)) * values[..., None]
    window[..., params.context_before] = values
    return Examples(
        seq=seq,
        pos=pos,
        values=np.where(filled, values, 0).astype(np.float32),
        window_tokens=tokens,
        window_values=np.where(inside, window, np.nan).astype(np.float32),
    )


def _counts(rng: np.random.Generator, alive: npt.NDArray[np.bool_], bins: int) -> npt.NDArray[np.int64]:
    return np.where(alive[:, None], rng.geometric(0.001, (alive.shape[0], bins)), 0).astype(np.int64)


def dashboards_synthetic(n_features: int, params: DashboardParams | None = None, seed: int = 0) -> FeatureDashboards:
    """What a dashboard pass over N_SEQUENCES x CONTEXT tokens could produce: a few dead features, rare
    features with empty slots, densities from 1e-5 to 1e-1."""
    params = params or DashboardParams()
    rng = np.random.default_rng(seed)
    alive = rng.random(n_features) >= DEAD_SHARE
    max_act = np.where(alive, rng.lognormal(1.0, 0.6, n_features), 0.0).astype(np.float32)
    # Rare features fill only some slots; slots fill in rank order.
    filled_share = np.where(alive, rng.uniform(0.3, 1.5, n_features).clip(max=1.0), 0.0)
    top_filled = np.arange(params.top_k)[None, :] < np.ceil(filled_share * params.top_k)[:, None]
    interval_shape = (params.n_intervals, params.examples_per_interval)
    intervals_filled = (np.arange(params.examples_per_interval)[None, None, :]
                        < np.ceil(filled_share * params.examples_per_interval)[:, None, None])
    intervals_filled = np.broadcast_to(intervals_filled, (n_features, *interval_shape))
    logit_top = -np.sort(-rng.normal(0.5, 0.2, (n_features, params.logit_tokens)), axis=1)
    logit_bottom = np.sort(rng.normal(-0.5, 0.2, (n_features, params.logit_tokens)), axis=1)
    return FeatureDashboards(
        n_tokens=N_SEQUENCES * (CONTEXT - 1),
        frac_nonzero=np.where(alive, 10 ** rng.uniform(-5, -1, n_features), 0.0),
        max_act=max_act,
        top=_examples(rng, _top_values(rng, max_act, params.top_k), top_filled, params),
        intervals=_examples(rng, _interval_values(rng, max_act, *interval_shape), intervals_filled, params),
        interval_counts=_counts(rng, alive, params.n_intervals),
        act_hist_counts=_counts(rng, alive, params.act_hist_bins),
        logit_top_ids=rng.integers(0, VOCABULARY, (n_features, params.logit_tokens)),
        logit_top_values=logit_top.astype(np.float32),
        logit_bottom_ids=rng.integers(0, VOCABULARY, (n_features, params.logit_tokens)),
        logit_bottom_values=logit_bottom.astype(np.float32),
        logit_hist_counts=_counts(rng, np.ones(n_features, dtype=bool), params.logit_hist_bins),
        logit_hist_min=logit_bottom[:, 0].astype(np.float32) - 0.1,
        logit_hist_max=logit_top[:, 0].astype(np.float32) + 0.1,
        neighbour_ids=rng.integers(0, n_features, (n_features, params.neighbours)),
        neighbour_cosines=-np.sort(-rng.uniform(0.1, 0.6, (n_features, params.neighbours)), axis=1).astype(np.float32),
    )


def dashboards_head(dashboards: FeatureDashboards, n_features: int) -> FeatureDashboards:
    """The first n features."""
    def head(examples: Examples) -> Examples:
        return Examples(*(array[:n_features] for array in vars(examples).values()))

    fields: dict[str, Any] = {name: value[:n_features] if isinstance(value, np.ndarray) else value
                              for name, value in vars(dashboards).items()}
    return FeatureDashboards(**{**fields, "top": head(dashboards.top), "intervals": head(dashboards.intervals)})


def _timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=int, default=24_576)
    parser.add_argument("--baseline-features", type=int, default=2_048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    params = DashboardParams()
    build_start = time.perf_counter()
    dashboards = dashboards_synthetic(args.features, params)
    print(f"built {args.features} features' dashboards in {time.perf_counter() - build_start:.1f} s")
    with scratch_database(SCRATCH_DATABASE):
        from atlas.features.services import run_results_publish
        from bench.ingest_orm_baseline import (
            dashboard_compression,
            legacy_tables_create,
            row_bytes_per_feature,
            run_results_publish_orm,
        )
        from bench.records import records_make, run_make

        sae = records_make(args.features, slug="packed")
        publish_times = [_timed(lambda: run_results_publish(run=run_make(sae, params), dashboards=dashboards))
                         for _ in range(args.repeats)]
        legacy_tables_create()
        baseline_sae = records_make(args.baseline_features, slug="orm-baseline")
        baseline_input = dashboards_head(dashboards, args.baseline_features)
        baseline_s = _timed(lambda: run_results_publish_orm(run=run_make(baseline_sae, params),
                                                            dashboards=baseline_input))
        packed_bytes = row_bytes_per_feature(args.features, "features_feature")
        baseline_bytes = row_bytes_per_feature(args.baseline_features, "bench_legacy_feature",
                                               "bench_legacy_featureexample")
        compression = dashboard_compression()
    publish_s = statistics.median(publish_times)
    scaled_baseline_s = baseline_s * args.features / args.baseline_features
    examples = params.top_k + params.n_intervals * params.examples_per_interval
    print(f"{args.features} features x {examples} example slots of {params.window} tokens, {os.cpu_count()} CPUs")
    print(f"run_results_publish (binary COPY, packed): {publish_s:.2f} s (median of {args.repeats}: "
          + ", ".join(f"{seconds:.2f}" for seconds in publish_times) + ")")
    scaled = "" if args.baseline_features == args.features else (
        f", measured {baseline_s:.2f} s on {args.baseline_features} features and scaled linearly")
    print(f"ORM bulk_create, a row per example (baseline): {scaled_baseline_s:.2f} s{scaled}")
    print(f"stored per feature: {packed_bytes / 1024:.1f} KiB packed ({compression}), "
          f"{baseline_bytes / 1024:.1f} KiB as ORM rows")
    print(f"RESULT ingest_seconds={publish_s:.3f}")
    print(f"RESULT ingest_speedup_vs_orm={scaled_baseline_s / publish_s:.1f}")
    print(f"RESULT stored_bytes_per_feature={packed_bytes:.0f}")


if __name__ == "__main__":
    main()
