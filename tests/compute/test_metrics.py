"""The SAE quality metrics against SAELens's own evals on the same tiny model, SAE and tokens."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from transformer_lens import HookedTransformer

from tests import factories
from workers.compute.corpus import stdlib_docstrings, tokenize_into_sequences
from workers.compute.language_model import ModelSource, load_language_model, tokenizer_definition
from workers.compute.metrics import SaeMetrics, sae_metrics, special_token_ids
from workers.compute.model_source import TextTokenizer
from workers.compute.sae import sae_load

BATCH = 4
# Both sides run in float64, so that the comparison checks definitions rather than float32 rounding:
# the tiny model's CE losses barely move under ablation, which makes the CE score ill-conditioned.
RTOL = 1e-4
# Our name of each metric and SAELens's (run_evals groups them; the names are unique across groups).
SAE_LENS_NAMES = {
    "l0": "l0",
    "explained_variance": "explained_variance",
    "mse": "mse",
    "cosine_similarity": "cossim",
    "ce_loss_clean": "ce_loss_without_sae",
    "ce_loss_with_sae": "ce_loss_with_sae",
    "ce_loss_zero_ablation": "ce_loss_with_ablation",
    "ce_loss_score": "ce_loss_score",
    "kl_div_with_sae": "kl_div_with_sae",
    "kl_div_zero_ablation": "kl_div_with_ablation",
    "kl_div_score": "kl_div_score",
}


class TokenStore:
    """The two methods and two attributes of an ActivationsStore that SAELens's evals use, over fixed tokens."""

    def __init__(self, tokens: npt.NDArray[np.int64], batch_size: int) -> None:
        self.tokens = torch.from_numpy(tokens)
        self.context_size = tokens.shape[1]
        self.store_batch_size_prompts = batch_size
        self.next = 0

    def get_batch_tokens(self, n: int) -> torch.Tensor:
        batch = self.tokens[self.next : self.next + n]
        self.next += n
        return batch

    def reset_input_dataset(self) -> None:
        self.next = 0


@pytest.fixture(scope="module")
def model() -> Iterator[HookedTransformer]:
    source = ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir()))
    yield load_language_model(source).to(torch.float64)


@pytest.fixture(scope="module")
def tokens(model: HookedTransformer) -> npt.NDArray[np.int64]:
    """12 sequences starting with BOS, with EOS in the middle of some, as documents are joined."""
    tokenizer = model.tokenizer
    assert tokenizer is not None
    text_tokenizer = TextTokenizer(tokenizer_definition(tokenizer))
    tokens = tokenize_into_sequences(text_tokenizer, stdlib_docstrings(80_000), 48, max_sequences=12).astype(np.int64)
    tokens[::3, 20] = tokenizer.eos_token_id
    return tokens


def near_identity_sae(directory: Path, d_in: int, hook_name: str, architecture: str, **cfg: Any) -> Path:
    """An SAE whose feature pairs are +x and -x, shrunk by a bias: it reconstructs much but not all."""
    from sae_lens import SAE

    sae = SAE.from_dict({
        "architecture": architecture, "d_in": d_in, "d_sae": 2 * d_in, "dtype": "float32", "device": "cpu",
        "metadata": {"hook_name": hook_name, "model_name": "tiny-llama"}, **cfg,
    })
    eye = torch.eye(d_in)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.fill_(-0.02)
        sae.b_dec.copy_(torch.linspace(-0.01, 0.01, d_in))
    sae.save_model(str(directory))
    return directory


def sae_lens_evals(model: HookedTransformer, directory: Path, tokens: npt.NDArray[np.int64]) -> dict[str, float]:
    from sae_lens import SAE
    from sae_lens.evals import EvalConfig, run_evals
    from sae_lens.training.activation_scaler import ActivationScaler

    sae = SAE.load_from_disk(str(directory), dtype="float64")
    n_batches = -(-tokens.shape[0] // BATCH)
    config = EvalConfig(
        batch_size_prompts=BATCH, n_eval_reconstruction_batches=n_batches, n_eval_sparsity_variance_batches=n_batches,
        compute_kl=True, compute_ce_loss=True, compute_sparsity_metrics=True, compute_variance_metrics=True,
    )  # fmt: skip
    metrics, _ = run_evals(sae, TokenStore(tokens, BATCH), model, ActivationScaler(), config)
    return {name: value for group in metrics.values() for name, value in group.items()}


CASES = {
    "standard": ("blocks.0.hook_resid_post", "standard", {}),
    "topk": ("blocks.1.hook_resid_post", "topk", {"k": 40}),
    "jumprelu": ("blocks.0.hook_resid_post", "jumprelu", {}),
}


@pytest.mark.parametrize("case", CASES)
def test_metrics_match_sae_lens_evals(
    case: str, model: HookedTransformer, tokens: npt.NDArray[np.int64], tmp_path: Path
) -> None:
    hook_name, architecture, cfg = CASES[case]
    directory = near_identity_sae(tmp_path / "sae", model.cfg.d_model, hook_name, architecture, **cfg)
    ours = sae_metrics(model, sae_load(directory, dtype=torch.float64), tokens, hook_name, batch_size=BATCH)
    theirs = sae_lens_evals(model, directory, tokens)
    for name, sae_lens_name in SAE_LENS_NAMES.items():
        assert getattr(ours, name) == pytest.approx(theirs[sae_lens_name], rel=RTOL), name
    assert 0.2 < ours.explained_variance < 0.99 and ours.ce_loss_score > 0.2  # a case where the SAE does something


def test_special_tokens_count_nowhere(model: HookedTransformer, tokens: npt.NDArray[np.int64], tmp_path: Path) -> None:
    assert model.tokenizer is not None
    special = special_token_ids(model.tokenizer)
    assert {model.tokenizer.bos_token_id, model.tokenizer.eos_token_id} <= set(special)
    directory = near_identity_sae(tmp_path / "sae", model.cfg.d_model, factories.TINY_HOOK, "standard")
    metrics = sae_metrics(model, sae_load(directory, dtype=torch.float64), tokens, factories.TINY_HOOK)
    assert metrics.n_tokens == int(np.isin(tokens, special, invert=True).sum())
    assert metrics.n_sequences == tokens.shape[0]


def test_the_sample_can_be_cut_into_any_batches(
    model: HookedTransformer, tokens: npt.NDArray[np.int64], tmp_path: Path
) -> None:
    directory = near_identity_sae(tmp_path / "sae", model.cfg.d_model, factories.TINY_HOOK, "standard")
    sae = sae_load(directory, dtype=torch.float64)
    whole: SaeMetrics = sae_metrics(model, sae, tokens, factories.TINY_HOOK, batch_size=12)
    uneven = sae_metrics(model, sae, tokens, factories.TINY_HOOK, batch_size=5)
    for name in SAE_LENS_NAMES:
        assert getattr(uneven, name) == pytest.approx(getattr(whole, name), rel=RTOL), name
