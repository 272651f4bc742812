"""Text a user types, run through the model and SAE: each token's activations of one feature, the top features,
or each token's own top features.

The text is tokenized as the datasets are (BOS, then the text without special tokens), so a feature sees
it as it saw the dashboards' sequences. BOS is returned with its activation but counts nowhere, as in the
dashboards: it is never a maximum and never ranks a feature.
"""

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from workers.compute.dashboard import _feature_slices, _flattened, _hook_activations, _stop_at_layer
from workers.compute.sae import SparseAutoencoder


class LiveTextError(ValueError):
    """Text that cannot be run: empty once tokenized, or a model without a tokenizer."""


@dataclass(frozen=True)
class TextActivations:
    """Activations of some features on every token of one text."""

    token_ids: npt.NDArray[np.int64]  # [T], BOS first
    features: npt.NDArray[np.int64]  # [f] feature indices, strongest first when ranked
    values: npt.NDArray[np.float32]  # [f, T]


def text_tokens(model: HookedTransformer, text: str) -> Tensor:
    """[1, T]: BOS, then the text's tokens without special tokens, cut to the model's context."""
    tokenizer = model.tokenizer
    if tokenizer is None or tokenizer.bos_token_id is None:
        raise LiveTextError("The model has no tokenizer with a BOS token, so it cannot read typed text.")
    body: list[int] = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not body:
        raise LiveTextError("The text has no tokens; type some words.")
    ids = [tokenizer.bos_token_id, *body][: model.cfg.n_ctx]
    return torch.tensor([ids], dtype=torch.int64)


def hook_input(model: HookedTransformer, sae: SparseAutoencoder, hook_name: str, tokens: Tensor) -> Tensor:
    """[b, T, d_in]: the hook's activations on tokens [b, T], as the SAE reads them.

    Rows are read unpadded; a row padded on the right is read right too, up to its own length, since causal
    attention never lets a token see the padding after it.
    """
    device = next(model.parameters()).device
    raw = _hook_activations(model, tokens.to(device), hook_name, _stop_at_layer(model, hook_name))
    return _flattened(raw, sae, hook_name)


def feature_activations_on_text(
    model: HookedTransformer, sae: SparseAutoencoder, hook_name: str, text: str, feature: int
) -> TextActivations:
    """One feature's activation on every token of text; values [1, T]."""
    if not 0 <= feature < sae.d_sae:
        raise LiveTextError(f"The SAE has features 0 to {sae.d_sae - 1}; there is no feature {feature}.")
    tokens = text_tokens(model, text)
    with torch.inference_mode():
        values = sae.encode_features(hook_input(model, sae, hook_name, tokens)[0], feature, feature + 1)  # [T, 1]
    return TextActivations(
        token_ids=tokens[0].numpy(),
        features=np.array([feature], dtype=np.int64),
        values=values.T.float().cpu().numpy(),
    )


def top_features_on_text(
    model: HookedTransformer, sae: SparseAutoencoder, hook_name: str, text: str, n: int
) -> TextActivations:
    """The (at most) n features with the strongest activation on any token but BOS, strongest first.

    Features that never fire on the text are left out. The SAE is encoded a slice of features at a time
    and only each slice's n best are kept, so memory stays O(T x n) beyond one slice, whatever d_sae.
    """
    tokens = text_tokens(model, text)
    n_tokens = tokens.shape[1]
    features = torch.zeros(0, dtype=torch.int64)
    maxima = torch.zeros(0)
    values = torch.zeros((0, n_tokens))
    with torch.inference_mode():
        hook_in = hook_input(model, sae, hook_name, tokens)[0]
        for part in _feature_slices(sae.d_sae, n_tokens):
            acts = sae.encode_features(hook_in, part.start, part.stop).T.float().cpu()  # [f, T]
            strongest = acts[:, 1:].amax(dim=1) if n_tokens > 1 else torch.zeros(acts.shape[0])
            best = strongest.sort(descending=True, stable=True).indices[:n]
            features = torch.cat([features, best + part.start])
            maxima = torch.cat([maxima, strongest[best]])
            values = torch.cat([values, acts[best]])
            # Stable, so equal maxima keep the lower feature index first, however the slices fall.
            order = maxima.sort(descending=True, stable=True).indices[:n]
            features, maxima, values = features[order], maxima[order], values[order]
    fired = maxima > 0
    return TextActivations(
        token_ids=tokens[0].numpy(),
        features=features[fired].numpy(),
        values=values[fired].numpy().astype(np.float32),
    )


@dataclass(frozen=True)
class TokenTopFeatures:
    """Each token's strongest features on one text (BOS included: the caller decides what to show)."""

    token_ids: npt.NDArray[np.int64]  # [T], BOS first
    special: npt.NDArray[np.bool_]  # [T]: the token is one of the tokenizer's special tokens
    features: npt.NDArray[np.int64]  # [T, k] feature indices, strongest first (the lower index first on ties)
    values: npt.NDArray[np.float32]  # [T, k]; where fewer than k features fire, the rest are 0


def top_features_by_token(
    model: HookedTransformer, sae: SparseAutoencoder, hook_name: str, text: str, k: int
) -> TokenTopFeatures:
    """Each token's k strongest features (k at most d_sae). The SAE is encoded a slice of features at a time and
    each token keeps its k best so far, so memory stays O(T x k) beyond one slice, whatever d_sae."""
    tokens = text_tokens(model, text)
    n_tokens, k = tokens.shape[1], min(k, sae.d_sae)
    with torch.inference_mode():
        hook_in = hook_input(model, sae, hook_name, tokens)[0]
        values = torch.zeros((n_tokens, 0), device=hook_in.device)
        features = torch.zeros((n_tokens, 0), dtype=torch.int64, device=hook_in.device)
        for part in _feature_slices(sae.d_sae, n_tokens):
            acts = sae.encode_features(hook_in, part.start, part.stop).float()  # [T, f]
            indices = torch.arange(part.start, part.stop, device=hook_in.device).expand(n_tokens, -1)
            # The best so far come first and hold lower indices, so a stable sort keeps the lower index on ties.
            values, features = torch.cat([values, acts], dim=1), torch.cat([features, indices], dim=1)
            order = values.sort(dim=1, descending=True, stable=True).indices[:, :k]
            values, features = values.gather(1, order), features.gather(1, order)
    special_ids = torch.tensor(sorted(set(model.tokenizer.all_special_ids)) if model.tokenizer else [],
                               dtype=torch.int64)
    return TokenTopFeatures(
        token_ids=tokens[0].numpy(),
        special=torch.isin(tokens[0], special_ids).numpy(),
        features=features.cpu().numpy(),
        values=values.cpu().numpy().astype(np.float32),
    )
