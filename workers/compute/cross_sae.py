"""Each feature's nearest features in another SAE (same d_in), by the cosine of their decoder directions."""

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from workers.compute.neighbours import NEIGHBOUR_CHUNK_ELEMENTS
from workers.compute.top_k import top_k_lower_index_ties


def cross_sae_neighbours(
    W_a: Tensor,  # [Fa, d_in]
    W_b: Tensor,  # [Fb, d_in]
    n: int = 10,
    chunk: int | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """For every feature of SAE a, the n features of SAE b whose decoder rows have the highest cosine, best first.

    Neuronpedia's cross-SAE `cossim`: the signed cosine of unit decoder rows, highest first (not its absolute
    value). Returns (ids [Fa, k], cosines [Fa, k]) with k = min(n, Fb); equal cosines list the lower id first.
    A zero decoder row has cosine 0 with every feature, so a zero row of a lists b's first k features.
    Computed as [chunk, d_in] @ [d_in, Fb] products of unit rows in float32 on W_a's device (W_b is moved
    there); chunk (rows per product) defaults to what keeps a chunk's cosines within NEIGHBOUR_CHUNK_ELEMENTS.
    """
    if W_a.shape[1] != W_b.shape[1]:
        raise ValueError(f"decoders of d_in {W_a.shape[1]} and {W_b.shape[1]} cannot be compared")
    n_a, n_b = W_a.shape[0], W_b.shape[0]
    k = max(0, min(n, n_b))
    with torch.inference_mode():
        directions_a = torch.nn.functional.normalize(W_a.float(), dim=1)  # zero rows stay zero
        directions_b_t = torch.nn.functional.normalize(W_b.float().to(W_a.device), dim=1).T.contiguous()
        rows = chunk or max(1, NEIGHBOUR_CHUNK_ELEMENTS // max(n_b, 1))
        ids: list[Tensor] = [torch.zeros((0, k), dtype=torch.int64)]
        cosines: list[Tensor] = [torch.zeros((0, k))]
        for start in range(0, n_a, rows):
            similarity = directions_a[start : start + rows] @ directions_b_t  # [c, Fb]
            values, indices = top_k_lower_index_ties(similarity, k)
            ids.append(indices.cpu())
            cosines.append(values.cpu())
    return torch.cat(ids).numpy().astype(np.int64), torch.cat(cosines).numpy().astype(np.float32)
