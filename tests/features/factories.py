"""FeatureDashboards for feature tests: all-empty arrays of a chosen shape, to fill in where a test cares."""

import numpy as np

from workers.compute.results import Examples, FeatureDashboards


def examples_empty(n_features: int, slots: tuple[int, ...], window: int) -> Examples:
    shape = (n_features, *slots)
    return Examples(
        seq=np.full(shape, -1, dtype=np.int64),
        pos=np.zeros(shape, dtype=np.int64),
        values=np.zeros(shape, dtype=np.float32),
        window_tokens=np.full((*shape, window), -1, dtype=np.int32),
        window_values=np.full((*shape, window), np.nan, dtype=np.float32),
    )


def dashboards_empty(n_features: int, *, top_k: int = 2, n_intervals: int = 2, per_interval: int = 1,
                     window: int = 4, logit_tokens: int = 2, act_hist_bins: int = 2,
                     logit_hist_bins: int = 3, neighbours: int = 2) -> FeatureDashboards:
    """Features that never fired: every slot empty, every count zero; feature i's neighbours are the next ones."""
    following = (np.arange(n_features)[:, None] + np.arange(1, neighbours + 1)) % max(n_features, 1)
    return FeatureDashboards(
        n_tokens=192,
        frac_nonzero=np.zeros(n_features),
        max_act=np.zeros(n_features, dtype=np.float32),
        top=examples_empty(n_features, (top_k,), window),
        intervals=examples_empty(n_features, (n_intervals, per_interval), window),
        interval_counts=np.zeros((n_features, n_intervals), dtype=np.int64),
        act_hist_counts=np.zeros((n_features, act_hist_bins), dtype=np.int64),
        logit_top_ids=np.zeros((n_features, logit_tokens), dtype=np.int64),
        logit_top_values=np.zeros((n_features, logit_tokens), dtype=np.float32),
        logit_bottom_ids=np.zeros((n_features, logit_tokens), dtype=np.int64),
        logit_bottom_values=np.zeros((n_features, logit_tokens), dtype=np.float32),
        logit_hist_counts=np.zeros((n_features, logit_hist_bins), dtype=np.int64),
        logit_hist_min=np.zeros(n_features, dtype=np.float32),
        logit_hist_max=np.zeros(n_features, dtype=np.float32),
        neighbour_ids=following.astype(np.int64),
        neighbour_cosines=np.zeros((n_features, neighbours), dtype=np.float32),
    )
