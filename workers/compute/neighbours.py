"""Each feature's nearest features in the same SAE, by the cosine similarity of their decoder directions."""

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

# One chunk's similarities ([chunk, d_sae]) stay below this many elements, ~256 MB in fp32.
NEIGHBOUR_CHUNK_ELEMENTS = 1 << 26


def decoder_neighbours(
    W_dec: Tensor,  # [F, d_in]
    n: int = 10,
    chunk: int | None = None,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """For every feature, the n other features whose decoder rows have the highest cosine, best first.

    Returns (ids [F, k], cosines [F, k]) with k = min(n, F - 1): a feature is never its own neighbour.
    All features at once, as [chunk, d_in] @ [d_in, F] products of unit rows in float32, on W_dec's device;
    chunk (rows per product) defaults to what keeps a chunk's similarities within NEIGHBOUR_CHUNK_ELEMENTS.
    A zero decoder row has cosine 0 with every feature.
    """
    n_features = W_dec.shape[0]
    k = max(0, min(n, n_features - 1))
    if k == 0:
        return np.zeros((n_features, 0), dtype=np.int64), np.zeros((n_features, 0), dtype=np.float32)
    with torch.inference_mode():
        directions = torch.nn.functional.normalize(W_dec.float(), dim=1)  # [F, d_in], zero rows stay zero
        rows = chunk or max(1, NEIGHBOUR_CHUNK_ELEMENTS // n_features)
        ids: list[Tensor] = []
        cosines: list[Tensor] = []
        for start in range(0, n_features, rows):
            similarity = directions[start : start + rows] @ directions.T  # [c, F]
            own = torch.arange(similarity.shape[0], device=similarity.device)
            similarity[own, own + start] = -torch.inf
            top = similarity.topk(k, dim=1)
            ids.append(top.indices.cpu())
            cosines.append(top.values.cpu())
    return torch.cat(ids).numpy().astype(np.int64), torch.cat(cosines).numpy().astype(np.float32)
