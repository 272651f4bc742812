"""An SAE's quality metrics as plain numbers, apart from the torch code that computes them (metrics.py), so that
the service storing them imports no torch."""

from dataclasses import dataclass


@dataclass(frozen=True)
class SaeMetrics:
    """An SAE's quality metrics on a sample of tokens; workers.compute.metrics defines each."""

    n_sequences: int
    n_tokens: int  # tokens counted in every metric but the CE losses (special tokens excluded)
    l0: float
    explained_variance: float
    mse: float
    cosine_similarity: float
    ce_loss_clean: float
    ce_loss_with_sae: float
    ce_loss_zero_ablation: float
    ce_loss_score: float
    kl_div_with_sae: float
    kl_div_zero_ablation: float
    kl_div_score: float
