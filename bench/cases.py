"""What the benchmarks share: the SmolLM2 CPU case, random SAEs with a chosen L0, the bare pass, timing."""

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from transformer_lens import HookedTransformer

from workers.compute.builtin_models import smollm2_convert
from workers.compute.corpus import stdlib_docstrings, tokenize_into_sequences
from workers.compute.language_model import load_language_model
from workers.compute.model_source import ModelSource, load_tokenizer
from workers.compute.sae import SaeConfig, SparseAutoencoder

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_DIR = ROOT / "var" / "models" / "smollm2-135m-instruct"
SMOLLM2_HOOK = "blocks.5.hook_resid_post"
# Far more docstring text than 64 x 128 tokens need, so the sequences never run short.
DOCSTRING_CHARS = 2_000_000
# Sequences whose activations set the random SAE's thresholds.
L0_SAMPLE_SEQUENCES = 8
# torch.quantile refuses inputs with more elements than this.
QUANTILE_MAX_ELEMENTS = 1 << 24


def smollm2_model() -> HookedTransformer:
    """SmolLM2-135M-Instruct on CPU, converted from the wheel's GGUF on first use."""
    return load_language_model(ModelSource("hf_local", str(smollm2_convert(SMOLLM2_DIR))))


def docstring_tokens(sequences: int, context: int) -> npt.NDArray[np.int32]:
    """[sequences, context] SmolLM2 token ids of standard-library docstrings, BOS first in each row."""
    tokenizer = load_tokenizer(ModelSource("hf_local", str(smollm2_convert(SMOLLM2_DIR))))
    return tokenize_into_sequences(tokenizer, stdlib_docstrings(DOCSTRING_CHARS), context, max_sequences=sequences)


def hook_acts(model: HookedTransformer, tokens: Tensor, hook: str) -> Tensor:
    """The hook's activations [b, T, d_model] for tokens [b, T], running the model no further than needed."""
    captured: list[Tensor] = []
    model.run_with_hooks(tokens, fwd_hooks=[(hook, lambda act, hook: captured.append(act))],
                         stop_at_layer=int(hook.split(".")[1]) + 1, return_type=None)
    return captured[0]


def random_sae(model: HookedTransformer, tokens: Tensor, hook: str, d_sae: int, target_l0: int,
               dtype: torch.dtype = torch.float32) -> SparseAutoencoder:
    """Random SAE on the model's device; b_enc puts each feature's threshold at the quantile giving target_l0.

    Decoder rows have unit norm, as trained SAEs' do, so tools that fold decoder norms change nothing.
    """
    d_model = model.cfg.d_model
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(0)
    w_enc = torch.randn(d_model, d_sae, generator=generator) / d_model**0.5
    w_dec = torch.randn(d_sae, d_model, generator=generator)
    w_dec = w_dec / w_dec.norm(dim=1, keepdim=True)
    sample = hook_acts(model, tokens[:L0_SAMPLE_SEQUENCES].to(device), hook).reshape(-1, d_model).float().cpu()
    b_enc = -_column_quantiles(sample @ w_enc, 1 - target_l0 / d_sae)
    config = SaeConfig("standard", d_model, d_sae, hook, False, str(dtype).removeprefix("torch."), {})
    tensors = {"W_enc": w_enc, "W_dec": w_dec, "b_enc": b_enc, "b_dec": torch.zeros(d_model)}
    return SparseAutoencoder(config, {name: tensor.to(device=device, dtype=dtype) for name, tensor in tensors.items()})


def _column_quantiles(values: Tensor, quantile: float) -> Tensor:
    """quantile of each column of values [rows, columns], a slice of columns at a time for wide SAEs."""
    columns_per_slice = max(1, QUANTILE_MAX_ELEMENTS // values.shape[0])
    return torch.cat([part.quantile(quantile, dim=0) for part in torch.split(values, columns_per_slice, dim=1)])


def bare_forward_encode(model: HookedTransformer, sae: SparseAutoencoder, tokens: Tensor, hook: str,
                        batch_size: int) -> None:
    """The least any dashboard pass must do: one forward to the hook and one encode per token."""
    for start in range(0, len(tokens), batch_size):
        sae.encode(hook_acts(model, tokens[start : start + batch_size].to(sae.device), hook))


def timed(function: Callable[[], object], repeats: int, synchronize: Callable[[], None] | None = None) -> list[float]:
    """Wall-clock seconds of each of `repeats` calls; synchronize (e.g. CUDA's) runs before each clock read."""
    times = []
    for _ in range(repeats):
        if synchronize:
            synchronize()
        start = time.perf_counter()
        function()
        if synchronize:
            synchronize()
        times.append(time.perf_counter() - start)
    return times
