"""The k largest scores of each row, equal scores broken by the lower column index, at topk's cost."""

from torch import Tensor


def top_k_lower_index_ties(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(values [R, k], indices [R, k]) of scores [R, C], best first; among equal scores the lower index first.

    torch.topk picks an arbitrary member of a tie. Here the k winners are re-sorted by (value, index), and
    only the rows whose k-th value is shared with a column left out (a tie across the cut, rare except for
    constant rows such as a zero decoder row) are redone with a full stable sort. One topk of k + 1 finds
    those rows: the (k+1)-th largest equals the k-th exactly when the tie crosses the cut. k must be <= C.
    """
    wide = scores.topk(min(k + 1, scores.shape[1]), dim=1)
    values, indices = _by_value_then_index(wide.values[:, :k], wide.indices[:, :k])
    if k == 0 or wide.values.shape[1] == k:
        return values, indices
    rows = (wide.values[:, k] == wide.values[:, k - 1]).nonzero().squeeze(1)
    if rows.numel():
        order = scores[rows].sort(dim=1, descending=True, stable=True)
        values[rows], indices[rows] = order.values[:, :k], order.indices[:, :k]
    return values, indices


def _by_value_then_index(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    by_index = indices.sort(dim=1).indices
    values, indices = values.gather(1, by_index), indices.gather(1, by_index)
    by_value = values.sort(dim=1, descending=True, stable=True).indices
    return values.gather(1, by_value), indices.gather(1, by_value)
