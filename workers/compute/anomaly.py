"""How unusual each token is to an SAE: its reconstruction error and the rarity of the features that fire on it,
and where those scores fall in a dataset's own distribution of them.

- Reconstruction error is relative: |x - x_hat|^2 / |x|^2 in the hook's space. The residual stream's norm grows
  along a sequence and differs between tokens many times over; the plain squared error would rank tokens by
  their norm, the relative one by how much of them the SAE misses (1 means nothing is reconstructed).
- Rarity is the activation-weighted mean surprisal of the active features, sum_i a_i (-log p_i) / sum_i a_i,
  in nats, where p_i is feature i's density in the run. A mean rather than a sum, so a token is not rare merely
  because many features, or strong ones, fire on it: a token whose active features fire on one token in a
  million scores about 13.8 whatever their number. A token on which nothing fires has rarity 0 (its
  reconstruction is b_dec, which the reconstruction error sees). A feature with density 0 in the run (it never
  fired there) counts as firing on one of the run's tokens: -log(1 / n_tokens).
- BOS counts nowhere, as in the dashboards: its scores are left out of the maxima and the distribution.
- A percentile is the share of the dataset's tokens with a lower score, ties counting half, read from a table
  of quantiles (numpy's default, linear) by linear interpolation: below the table's minimum 0, above its
  maximum 1.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from workers.compute.dashboard import ENCODE_CHUNK_ELEMENTS
from workers.compute.live import LiveTextError, TextActivations, hook_input, text_tokens
from workers.compute.sae import SparseAutoencoder

# The quantile table of each score: 0 %, 0.1 %, ..., 100 %.
QUANTILES = 1001

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TokenAnomaly:
    """Each token's anomaly scores (BOS first where the tokens are a text's)."""

    reconstruction_error: FloatArray  # [n]
    rarity: FloatArray  # [n]


@dataclass(frozen=True)
class AnomalyDistribution:
    """A dataset's own distribution of the scores, as quantile tables of QUANTILES entries each."""

    n_tokens: int
    reconstruction_error: FloatArray  # [QUANTILES]
    rarity: FloatArray  # [QUANTILES]


def feature_surprisal(densities: FloatArray, n_tokens: int) -> FloatArray:
    """-log density of each feature [d_sae], a density below one token in n_tokens counting as one token."""
    if n_tokens < 1:
        raise ValueError(f"densities need a count of the tokens they were measured on, got {n_tokens}")
    return -np.log(np.maximum(densities.astype(np.float64), 1.0 / n_tokens))


def anomaly_scores(sae: SparseAutoencoder, x: Tensor, surprisal: FloatArray) -> TokenAnomaly:
    """The scores of hook activations x [n, d_in]. Rows are encoded a chunk at a time, so [chunk, d_sae] stays
    within the dashboards' encoding budget whatever d_sae."""
    weights = torch.from_numpy(surprisal).to(device=x.device, dtype=torch.float32)  # [d_sae]
    rows = max(1, ENCODE_CHUNK_ELEMENTS // sae.d_sae)
    errors, rarities = [], []
    with torch.inference_mode():
        for start in range(0, x.shape[0], rows):
            chunk = x[start : start + rows].float()  # [c, d_in]
            acts = sae.encode(chunk).float()  # [c, d_sae]
            error = (chunk - sae.decode(acts, source=chunk).float()).pow(2).sum(dim=-1)
            errors.append(error / chunk.pow(2).sum(dim=-1).clamp_min(torch.finfo(torch.float32).tiny))
            total = acts.sum(dim=-1)
            rarities.append(torch.where(total > 0, acts @ weights / total.clamp_min(1e-30), 0.0))
    return TokenAnomaly(
        reconstruction_error=torch.cat(errors).double().cpu().numpy(),
        rarity=torch.cat(rarities).double().cpu().numpy(),
    )


def feature_activations_with_anomaly(
    model: HookedTransformer, sae: SparseAutoencoder, hook_name: str, text: str, feature: int, surprisal: FloatArray
) -> tuple[TextActivations, TokenAnomaly]:
    """One feature's activation on every token of text and every token's scores, from one forward."""
    if not 0 <= feature < sae.d_sae:
        raise LiveTextError(f"The SAE has features 0 to {sae.d_sae - 1}; there is no feature {feature}.")
    tokens = text_tokens(model, text)
    with torch.inference_mode():
        hook_in = hook_input(model, sae, hook_name, tokens)[0]  # [T, d_in]
        values = sae.encode_features(hook_in, feature, feature + 1)  # [T, 1]
    activations = TextActivations(
        token_ids=tokens[0].numpy(),
        features=np.array([feature], dtype=np.int64),
        values=values.T.float().cpu().numpy(),
    )
    return activations, anomaly_scores(sae, hook_in, surprisal)


def dataset_anomaly_scores(
    model: HookedTransformer, sae: SparseAutoencoder, hook_name: str, tokens: npt.NDArray[np.integer],
    surprisal: FloatArray, batch_size: int = 8,
) -> TokenAnomaly:
    """The scores of every token but each sequence's first (BOS) of tokens [N sequences, T], sequence by
    sequence, position by position."""
    if tokens.ndim != 2 or tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise ValueError(f"tokens must be [sequences, positions] with at least 2 positions, got {tokens.shape}")
    token_tensor = torch.from_numpy(tokens.astype(np.int64))
    found = []
    for start in range(0, token_tensor.shape[0], batch_size):
        with torch.inference_mode():
            hook_in = hook_input(model, sae, hook_name, token_tensor[start : start + batch_size])[:, 1:]
        found.append(anomaly_scores(sae, hook_in.reshape(-1, hook_in.shape[-1]), surprisal))
    return TokenAnomaly(
        reconstruction_error=np.concatenate([scores.reconstruction_error for scores in found]),
        rarity=np.concatenate([scores.rarity for scores in found]),
    )


def anomaly_distribution(scores: TokenAnomaly) -> AnomalyDistribution:
    """The quantile tables of a dataset's scores."""
    if scores.rarity.size == 0:
        raise ValueError("the sample has no tokens to measure")
    levels = np.linspace(0.0, 1.0, QUANTILES)
    return AnomalyDistribution(
        n_tokens=int(scores.rarity.size),
        reconstruction_error=np.quantile(scores.reconstruction_error, levels),
        rarity=np.quantile(scores.rarity, levels),
    )


def percentiles(values: FloatArray, quantiles: FloatArray) -> FloatArray:
    """The share of the distribution below each value, ties counting half, from its quantile table [Q]."""
    levels = np.linspace(0.0, 1.0, quantiles.size)
    # np.interp reads a run of equal quantiles at its last entry: the share at or below the value. Read on the
    # table mirrored, it gives the share at or above; the mean of the share below and at or below counts ties half.
    at_or_below = np.interp(values, quantiles, levels, left=0.0, right=1.0)
    at_or_above = np.interp(-values, -quantiles[::-1], levels, left=0.0, right=1.0)
    result: FloatArray = (at_or_below + 1.0 - at_or_above) / 2.0
    return result
