"""Quality metrics of an SAE on a sample of tokens, defined exactly as SAELens's evals define them.

Conventions, all SAELens's (sae_lens.evals: get_sparsity_and_variance_metrics, get_recons_loss):

- Tokens whose id is one of the tokenizer's special tokens (BOS, EOS, PAD, SEP, decoder start; see
  `special_token_ids`) count nowhere: their activations are artefacts (BOS is an attention sink, EOS
  separates documents). Every other token counts once, whatever its sequence: means are per token.
- L0 counts features != 0 per token; MSE is the squared error summed over dimensions, averaged over
  tokens; cosine similarity is that of x and its reconstruction, averaged over tokens.
- Explained variance is 1 - E[|x - x_hat|^2] / (E[|x|^2] - |E[x]|^2): variance around the sample's
  mean over all counted tokens at once (not per batch), summed over dimensions.
- CE losses are next-token losses at counted positions (the position predicts the next token), from a
  full forward; "with SAE" splices the reconstruction in at the hook at counted positions only (special
  tokens keep their activations), "zero ablation" sets the hook's activation to zero at every position.
  ce_loss_score = (CE_zero_ablation - CE_with_SAE) / (CE_zero_ablation - CE_clean).
- KL divergences are KL(clean || spliced) of the next-token distributions, summed over the vocabulary,
  averaged over counted positions; kl_div_score = (KL_zero_ablation - KL_with_SAE) / KL_zero_ablation.
A score whose denominator is zero is NaN. Sums accumulate in float64 whatever the model's dtype.
"""

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint
from transformers import PreTrainedTokenizerBase

from workers.compute.metric_results import SaeMetrics
from workers.compute.sae import SparseAutoencoder

# The tokenizer attributes whose ids SAELens leaves out of its evals (sae_lens.util.get_special_token_ids).
SPECIAL_TOKEN_ATTRIBUTES = ("bos_token_id", "eos_token_id", "pad_token_id", "sep_token_id", "decoder_start_token_id")
# Below this total variance the sample has none to explain (SAELens's ExplainedVarianceCalculator).
MIN_TOTAL_VARIANCE = 1e-10


class _Sums:
    """Running float64 sums over the counted tokens of every batch so far, on the model's device."""

    def __init__(self, d_in: int, device: torch.device) -> None:
        self.sum_x = torch.zeros(d_in, dtype=torch.float64, device=device)  # [d_in]
        # l0, |x|^2, |x - x_hat|^2, cos, tokens, CE clean / SAE / ablation, CE positions, KL SAE / ablation
        self.scalars = torch.zeros(11, dtype=torch.float64, device=device)

    def add(self, *values: Tensor, start: int) -> None:
        self.scalars[start : start + len(values)] += torch.stack([value.double() for value in values])


def special_token_ids(tokenizer: PreTrainedTokenizerBase | None) -> list[int]:
    """The ids that metrics leave out, as SAELens chooses them: structural special tokens only."""
    ids = {getattr(tokenizer, attribute, None) for attribute in SPECIAL_TOKEN_ATTRIBUTES}
    return sorted(token_id for token_id in ids if isinstance(token_id, int))


def sae_metrics(
    model: HookedTransformer,
    sae: SparseAutoencoder,
    tokens: np.ndarray,
    hook_name: str,
    ignore_token_ids: list[int] | None = None,
    batch_size: int = 8,
) -> SaeMetrics:
    """Metrics of sae at hook_name over tokens [N sequences, T], three full forwards per batch.

    ignore_token_ids defaults to special_token_ids(model.tokenizer).
    """
    token_tensor = _tokens_validate(tokens, model)
    device = next(model.parameters()).device
    if sae.device != device:
        raise ValueError(f"the SAE is on {sae.device} but the model is on {device}; load it on {device}")
    ignored = torch.tensor(
        special_token_ids(model.tokenizer) if ignore_token_ids is None else ignore_token_ids,
        dtype=torch.int64, device=device,
    )
    sums = _Sums(sae.d_in, device)
    with torch.inference_mode():
        for start in range(0, token_tensor.shape[0], batch_size):
            batch = token_tensor[start : start + batch_size].to(device)
            _batch_add(sums, model, sae, hook_name, batch, ~torch.isin(batch, ignored))
    return _metrics(sums, token_tensor.shape[0])


def _tokens_validate(tokens: np.ndarray, model: HookedTransformer) -> Tensor:
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer) or tokens.shape[0] == 0:
        raise ValueError(f"tokens must be a non-empty integer array [sequences, positions], got {tokens.shape}")
    if tokens.shape[1] < 2:
        raise ValueError("next-token losses need sequences of at least 2 tokens")
    if tokens.min() < 0 or tokens.max() >= model.cfg.d_vocab:
        raise ValueError(f"token ids must lie in [0, {model.cfg.d_vocab}), the model's vocabulary")
    return torch.from_numpy(tokens.astype(np.int64))


def _batch_add(
    sums: _Sums, model: HookedTransformer, sae: SparseAutoencoder, hook_name: str, batch: Tensor, counted: Tensor
) -> None:
    """Add one batch [b, T]; counted [b, T] is False at special tokens."""
    if hook_name not in model.hook_dict:
        raise ValueError(f"the model has no hook {hook_name!r}; hooks look like 'blocks.0.hook_resid_post'")
    clean = _logits(model, batch, [])
    spliced = _logits(model, batch, [(hook_name, _splice_hook(sums, sae, counted))])
    clean_log_probs = clean.log_softmax(dim=-1)  # [b, T, V]
    del clean
    ce_positions = counted[:, :-1]  # a position's loss is its prediction of the next token
    kl_sae, ce_sae = _divergence_and_loss(clean_log_probs, spliced, batch, counted, ce_positions)
    del spliced
    ablated = _logits(model, batch, [(hook_name, _zero_hook)])
    kl_ablation, ce_ablation = _divergence_and_loss(clean_log_probs, ablated, batch, counted, ce_positions)
    ce_clean = _next_token_losses(clean_log_probs, batch)[ce_positions].sum()
    sums.add(ce_clean, ce_sae, ce_ablation, ce_positions.sum(), kl_sae, kl_ablation, start=5)


def _logits(model: HookedTransformer, batch: Tensor, hooks: list[tuple[str, Callable[..., Tensor]]]) -> Tensor:
    """Float32 logits [b, T, V]; an explicit all-ones mask, as these rows are unpadded."""
    logits: Tensor = model.run_with_hooks(
        batch, fwd_hooks=hooks, return_type="logits", attention_mask=torch.ones_like(batch)
    )
    return logits.float()


def _splice_hook(sums: _Sums, sae: SparseAutoencoder, counted: Tensor) -> Callable[[Tensor, HookPoint], Tensor]:
    """A hook that replaces the activation by its reconstruction at counted tokens, adding its statistics."""

    def splice(activation: Tensor, hook: HookPoint) -> Tensor:
        flat = activation.reshape(*activation.shape[:2], -1)  # [b, T, d_in]; hook_z's heads concatenated
        if flat.shape[-1] != sae.d_in:
            raise ValueError(f"hook {hook.name} gives {flat.shape[-1]} values per token; the SAE has d_in={sae.d_in}")
        feature_acts = sae.encode(flat)  # [b, T, d_sae]
        reconstruction = sae.decode(feature_acts, source=flat)  # [b, T, d_in]
        _reconstruction_add(sums, flat[counted], reconstruction[counted], feature_acts[counted])
        spliced = torch.where(counted[..., None], reconstruction.to(activation.dtype), flat)
        return spliced.reshape(activation.shape)

    return splice


def _zero_hook(activation: Tensor, hook: HookPoint) -> Tensor:
    return torch.zeros_like(activation)


def _reconstruction_add(sums: _Sums, x: Tensor, x_hat: Tensor, feature_acts: Tensor) -> None:
    """Add counted tokens' x [n, d_in], reconstructions x_hat [n, d_in] and feature activations [n, d_sae]."""
    x, x_hat = x.float(), x_hat.float()
    cosine = (x / x.norm(dim=-1, keepdim=True) * (x_hat / x_hat.norm(dim=-1, keepdim=True))).sum(dim=-1)
    sums.sum_x += x.double().sum(dim=0)
    sums.add(
        (feature_acts != 0).sum(), x.pow(2).sum(), (x - x_hat).pow(2).sum(), cosine.sum(),
        torch.tensor(x.shape[0], device=x.device), start=0,
    )


def _next_token_losses(log_probs: Tensor, batch: Tensor) -> Tensor:
    """-log p(next token) at every position but the last: [b, T - 1]."""
    return -log_probs[:, :-1].gather(-1, batch[:, 1:, None]).squeeze(-1)


def _divergence_and_loss(
    clean_log_probs: Tensor, logits: Tensor, batch: Tensor, counted: Tensor, ce_positions: Tensor
) -> tuple[Tensor, Tensor]:
    """Sums over counted positions of KL(clean || these logits) and of these logits' next-token losses."""
    log_probs = logits.log_softmax(dim=-1)
    # kl_div(log q, p) = p (log p - log q), computed from p as SAELens computes it so that p = 0 adds 0.
    kl = F.kl_div(log_probs, clean_log_probs.exp(), reduction="none").sum(dim=-1)  # [b, T]
    return kl[counted].sum(), _next_token_losses(log_probs, batch)[ce_positions].sum()


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator != 0 else float("nan")


def _metrics(sums: _Sums, n_sequences: int) -> SaeMetrics:
    l0, squared_norm, squared_error, cosine, n, ce_clean, ce_sae, ce_ablation, n_ce, kl_sae, kl_ablation = (
        sums.scalars.tolist()
    )
    if n == 0:
        raise ValueError("every token of the sample is a special token; there is nothing to measure")
    mean_x = sums.sum_x / n
    total_variance = squared_norm / n - float(mean_x.pow(2).sum())
    mse = squared_error / n
    if total_variance < MIN_TOTAL_VARIANCE:
        explained_variance = 1.0 if mse < MIN_TOTAL_VARIANCE else 0.0
    else:
        explained_variance = 1.0 - mse / total_variance
    ce = [value / n_ce if n_ce else float("nan") for value in (ce_clean, ce_sae, ce_ablation)]
    kl = [value / n for value in (kl_sae, kl_ablation)]
    return SaeMetrics(
        n_sequences=n_sequences,
        n_tokens=int(n),
        l0=l0 / n,
        explained_variance=explained_variance,
        mse=mse,
        cosine_similarity=cosine / n,
        ce_loss_clean=ce[0],
        ce_loss_with_sae=ce[1],
        ce_loss_zero_ablation=ce[2],
        ce_loss_score=_ratio(ce[2] - ce[1], ce[2] - ce[0]),
        kl_div_with_sae=kl[0],
        kl_div_zero_ablation=kl[1],
        kl_div_score=_ratio(kl[1] - kl[0], kl[1]),
    )
