"""The arrays a dashboard pass produces for every feature of an SAE, before anything is stored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # the web process reads these results and must not import torch
    from torch import Tensor


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
    neighbour_ids: npt.NDArray[np.int64]  # [F, neighbours] other features by decoder cosine, descending
    neighbour_cosines: npt.NDArray[np.float32]  # [F, neighbours]


@dataclass(frozen=True)
class ActiveLayout:
    """How an active (sequence, position, feature) entry is keyed so that keys sort usefully.

    Sequences are grouped in blocks of batch_size; within a block, entries are feature-major:
    key = (block * d_sae + feature) * block_tokens + (seq % batch_size) * seq_len + pos.
    So one feature's entries for one sequence are contiguous, and the pass emits keys in order.
    """

    d_sae: int
    seq_len: int
    batch_size: int

    @property
    def block_tokens(self) -> int:
        return self.batch_size * self.seq_len

    def key(self, seq: Tensor, pos: Tensor, feature: Tensor) -> Tensor:
        block, in_block = seq // self.batch_size, seq % self.batch_size
        return (block * self.d_sae + feature) * self.block_tokens + in_block * self.seq_len + pos

    def feature(self, key: Tensor) -> Tensor:
        return (key // self.block_tokens) % self.d_sae

    def seq(self, key: Tensor) -> Tensor:
        block = key // (self.block_tokens * self.d_sae)
        return block * self.batch_size + (key % self.block_tokens) // self.seq_len

    def pos(self, key: Tensor) -> Tensor:
        return key % self.seq_len


@dataclass(frozen=True)
class ShardState:
    """What a shard's model pass leaves for the merge: exact partial results for its sequences.

    top_* are unordered slots; an empty slot has score -inf and seq -1. active_* hold every active
    entry of the shard (BOS excluded when skipped), ascending by key (see ActiveLayout).
    """

    first_seq: int  # dataset index of the shard's first sequence, a multiple of batch_size
    n_seqs: int
    layout: ActiveLayout
    top_score: npt.NDArray[np.float32]  # [F, top_k] the example's activation
    top_seq: npt.NDArray[np.int64]  # [F, top_k]
    top_pos: npt.NDArray[np.int64]  # [F, top_k]
    max_act: npt.NDArray[np.float32]  # [F]
    active_keys: npt.NDArray[np.int64]  # [E]
    active_values: npt.NDArray[np.float32]  # [E]
    in_residual_space: bool  # the hook reads the residual stream, so the logit lens means something
