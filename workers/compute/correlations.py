"""Each feature's most correlated features over a run's tokens, exactly, from the dashboard pass's kept entries.

Pearson's r over all n counted tokens needs, per feature, the sum S_i and the sum of squares Q_i of its
activations, and per pair the co-occurrence sum C_ij = sum of a_i a_j over the tokens where both fire:

    r_ij = (n C_ij - S_i S_j) / sqrt((n Q_i - S_i^2) (n Q_j - S_j^2))

A pair that never co-fires has C_ij = 0 and so r_ij = -S_i S_j / ... <= 0 (activations are >= 0); such a pair
can still rank in the top k when a feature has fewer than k positive partners, so every pair is scored, a block
of features at a time: C for the block's rows comes from one sparse product, the rest is a dense [block, F]
array in float64. The result is exact (float64 throughout), with no candidate cut-off.

Cost: time O(sum over tokens of L0_block x L0) for the sparse products plus O(F^2) for the dense scoring;
memory O(E) for the sparse activation matrix (E kept entries, which the pass holds anyway) plus
CORRELATION_BLOCK_ELEMENTS float64 scores and at most that many co-occurrence entries per block.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse
import torch

from workers.compute.results import ActiveLayout, ShardState
from workers.compute.top_k import top_k_lower_index_ties

# One block's dense scores ([block, F] float64) stay below this many elements, ~128 MB.
CORRELATION_BLOCK_ELEMENTS = 1 << 24
CORRELATED_FEATURES = 10


@dataclass(frozen=True)
class FeatureCorrelations:
    """For every feature, the other features whose activations correlate most with it, highest r first.

    A slot with no partner (a feature that never fires or is constant over the run, or fewer than k features
    that vary) has id -1 and r 0. Constant features are never anyone's partner: their r is undefined.
    """

    ids: npt.NDArray[np.int64]  # [F, k]
    values: npt.NDArray[np.float32]  # [F, k] Pearson r, in [-1, 1]


@dataclass(frozen=True)
class _Moments:
    n_tokens: int
    sums: npt.NDArray[np.float64]  # [F] S_i
    deviations: npt.NDArray[np.float64]  # [F] sqrt(n Q_i - S_i^2), 0 for a constant feature
    activations: scipy.sparse.csc_array  # [tokens, F] the counted activations


def feature_correlations_of_shards(
    states: Sequence[ShardState], first_pos: int, k: int = CORRELATED_FEATURES
) -> FeatureCorrelations:
    """Correlations over the sequences of all shards of one run (the shards in any order)."""
    if not states:
        raise ValueError("a run needs at least one shard")
    ordered = sorted(states, key=lambda state: state.first_seq)
    return feature_correlations(
        np.concatenate([state.active_keys for state in ordered]),
        np.concatenate([state.active_values for state in ordered]),
        ordered[0].layout,
        n_seqs=sum(state.n_seqs for state in ordered),
        first_pos=first_pos,
        k=k,
    )


def feature_correlations(
    active_keys: npt.NDArray[np.int64],  # [E] keys of the active entries (see ActiveLayout)
    active_values: npt.NDArray[np.float32],  # [E] their activations
    layout: ActiveLayout,
    *,
    n_seqs: int,
    first_pos: int,
    k: int = CORRELATED_FEATURES,
) -> FeatureCorrelations:
    """The k features best correlated with each feature over the n_seqs x (seq_len - first_pos) counted tokens.

    Entries before first_pos (BOS when the dashboards skip it) count nowhere, as in the dashboards.
    Returns [F, min(k, F - 1)] arrays; ties in r list the lower id first.
    """
    n_features = layout.d_sae
    width = max(0, min(k, n_features - 1))
    moments = _moments(active_keys, active_values, layout, n_seqs, first_pos)
    varies = moments.deviations > 0
    block = max(1, CORRELATION_BLOCK_ELEMENTS // max(n_features, 1))
    ids = np.full((n_features, width), -1, dtype=np.int64)
    values = np.zeros((n_features, width), dtype=np.float32)
    for start in range(0, n_features, block):
        rows = np.arange(start, min(start + block, n_features))
        scores = _block_scores(moments, rows, varies)
        top_values, top_ids = top_k_lower_index_ties(torch.from_numpy(scores), width)
        found = torch.isfinite(top_values).numpy()
        ids[rows] = np.where(found, top_ids.numpy(), -1)
        values[rows] = np.where(found, top_values.numpy(), 0.0)
    return FeatureCorrelations(ids=ids, values=values)


def _moments(
    keys: npt.NDArray[np.int64], values: npt.NDArray[np.float32], layout: ActiveLayout, n_seqs: int, first_pos: int
) -> _Moments:
    if n_seqs <= 0 or layout.seq_len <= first_pos:
        raise ValueError(f"{n_seqs} sequences of {layout.seq_len} tokens from position {first_pos} count no token")
    key_tensor = torch.from_numpy(keys)
    position = layout.pos(key_tensor).numpy()
    counted = position >= first_pos
    seq = layout.seq(key_tensor).numpy()[counted]
    token = seq * (layout.seq_len - first_pos) + position[counted] - first_pos
    feature = layout.feature(key_tensor).numpy()[counted]
    activation = values[counted].astype(np.float64)
    n_tokens = n_seqs * (layout.seq_len - first_pos)
    sums = np.bincount(feature, weights=activation, minlength=layout.d_sae).astype(np.float64)
    squares = np.bincount(feature, weights=activation * activation, minlength=layout.d_sae).astype(np.float64)
    variance = np.maximum(n_tokens * squares - sums * sums, 0.0)  # rounding can take a constant one below 0
    shape = (n_tokens, layout.d_sae)
    return _Moments(
        n_tokens=n_tokens,
        sums=sums,
        deviations=np.sqrt(variance),
        activations=scipy.sparse.csc_array((activation, (token, feature)), shape=shape),
    )


def _block_scores(
    moments: _Moments, rows: npt.NDArray[np.int64], varies: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """[block, F] r of each row feature with every feature; -inf for itself and where r is undefined."""
    block = moments.activations[:, rows]
    co_occurrence = (block.T @ moments.activations).toarray()  # [block, F] C_ij, 0 where they never co-fire
    numerator = moments.n_tokens * co_occurrence - np.outer(moments.sums[rows], moments.sums)
    denominator = np.outer(moments.deviations[rows], moments.deviations)
    defined = np.outer(varies[rows], varies)
    scores: npt.NDArray[np.float64] = np.divide(
        numerator, denominator, out=np.full(numerator.shape, -np.inf), where=defined
    )
    np.clip(scores, -1.0, 1.0, out=scores, where=defined)
    scores[np.arange(rows.shape[0]), rows] = -np.inf
    return scores
