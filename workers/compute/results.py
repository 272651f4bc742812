"""The arrays a dashboard pass produces for every feature of an SAE, before anything is stored."""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class DashboardParams:
    """How a dashboard pass selects and summarises examples; one source of truth for the defaults."""

    top_k: int = 20
    context_before: int = 24
    context_after: int = 8
    n_intervals: int = 5
    examples_per_interval: int = 5
    act_hist_bins: int = 50
    logit_hist_bins: int = 50
    logit_tokens: int = 10
    batch_size: int = 8
    seed: int = 0
    # The first token of every sequence is BOS, whose activations are an artefact of attention sinks.
    skip_bos: bool = True

    @property
    def window(self) -> int:
        return self.context_before + 1 + self.context_after


@dataclass(frozen=True)
class Examples:
    """Examples for every feature; `slots` is (k,) for top examples, (n_intervals, per_interval) for intervals.

    An empty slot has seq == -1. Window positions outside the sequence have token -1 and value NaN.
    """

    seq: npt.NDArray[np.int64]  # [F, *slots] index of the sequence in the dataset
    pos: npt.NDArray[np.int64]  # [F, *slots] position of the example token in its sequence
    values: npt.NDArray[np.float32]  # [F, *slots] activation at (seq, pos)
    window_tokens: npt.NDArray[np.int32]  # [F, *slots, W] token ids pos-before .. pos+after
    window_values: npt.NDArray[np.float32]  # [F, *slots, W] the feature's activation on each of them


@dataclass(frozen=True)
class FeatureDashboards:
    """Everything a feature page shows, for all d_sae features at once (F = d_sae)."""

    n_tokens: int  # tokens counted in densities (BOS excluded when params.skip_bos)
    frac_nonzero: npt.NDArray[np.float64]  # [F]
    max_act: npt.NDArray[np.float32]  # [F]; 0 for a feature that never fires
    top: Examples  # slots (top_k,), sorted by value descending, at most one per sequence
    intervals: Examples  # slots (n_intervals, examples_per_interval); interval i is (i*max/n, (i+1)*max/n]
    interval_counts: npt.NDArray[np.int64]  # [F, n_intervals] active tokens in each interval
    act_hist_counts: npt.NDArray[np.int64]  # [F, act_hist_bins] over (0, max] in equal bins
    logit_top_ids: npt.NDArray[np.int64]  # [F, logit_tokens] descending by value
    logit_top_values: npt.NDArray[np.float32]
    logit_bottom_ids: npt.NDArray[np.int64]  # [F, logit_tokens] ascending by value
    logit_bottom_values: npt.NDArray[np.float32]
    logit_hist_counts: npt.NDArray[np.int64]  # [F, logit_hist_bins] over [min, max] of the feature's logits
    logit_hist_min: npt.NDArray[np.float32]  # [F]
    logit_hist_max: npt.NDArray[np.float32]  # [F]
