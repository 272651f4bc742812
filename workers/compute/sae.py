"""Running sparse autoencoders: their weights as tensors, encode and decode exactly as SAELens computes them.

The files (SAELens's cfg.json + sae_weights.safetensors, or a dictionary_learning trainer folder's config.json
+ ae.pt) are read and checked without torch in workers.compute.sae_files; this module turns them into tensors.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from workers.compute.file_tensors import FileTensor
from workers.compute.sae_errors import SaeFormatError
from workers.compute.sae_files import ARCHITECTURE_TENSORS, SaeConfig, sae_files_read

__all__ = [
    "ARCHITECTURES",
    "SaeConfig",
    "SaeFormatError",
    "SparseAutoencoder",
    "sae_load",
]

# normalize_activations that depend on each input, so decode needs that input too.
PER_INPUT_NORMALIZATIONS = ("constant_norm_rescale", "layer_norm")
LAYER_NORM_EPS = 1e-5  # SAELens's, added to the standard deviation on the way in only


class SparseAutoencoder:
    """The weights of a checked SAE, its encoder and its decoder, computed exactly as SAELens computes them."""

    def __init__(self, config: SaeConfig, tensors: dict[str, Tensor]) -> None:
        self.config = config
        self.d_in = config.d_in
        self.d_sae = config.d_sae
        self.tensors = tensors
        self.W_enc = tensors["W_enc"]  # [d_in, d_sae]
        self.W_dec = tensors["W_dec"]  # [d_sae, d_in]
        self.b_dec = tensors["b_dec"]  # [d_in]
        self.threshold = tensors.get("threshold")  # [d_sae], jumprelu only
        self._spec = ARCHITECTURES[config.architecture]

    @property
    def b_enc(self) -> Tensor:
        """[d_sae]; every architecture has it but gated, which has b_gate and b_mag instead."""
        return self.tensors["b_enc"]

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations [..., d_sae] of x [..., d_in] (hook_z: [..., n_heads, d_head]), as SAELens encodes."""
        return self.encode_features(x, 0, self.d_sae)

    def encode_features(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Activations [..., stop - start] of features start..stop-1 only.

        Where each feature's activation depends on its own pre-activation alone, only those columns of
        W_enc are multiplied, so a huge SAE can be encoded a slice of features at a time; top-k, which
        ranks all features against each other, encodes them all and keeps the slice.
        """
        if not self._spec.elementwise and (start, stop) != (0, self.d_sae):
            return self.encode(x)[..., start:stop]
        return self._spec.encode(self, self._sae_in(x), slice(start, stop))

    def decode(self, acts: Tensor, source: Tensor | None = None) -> Tensor:
        """The reconstruction of acts [..., d_sae] in the hook's space, as SAELens decodes it.

        `source` is the input that was encoded. normalize_activations layer_norm and constant_norm_rescale
        scale each input by its own statistics, which decoding undoes, so they need it; a hook_z SAE whose
        source is [..., n_heads, d_head] gives its heads back in that shape, otherwise [..., d_in].
        """
        out = self._spec.decode(self, acts.to(self.W_dec.dtype))  # [..., d_in]
        normalization = self.config.normalize_activations
        if normalization in PER_INPUT_NORMALIZATIONS:
            if source is None:
                raise ValueError(f"decoding an SAE with normalize_activations {normalization!r} needs its input")
            out = _normalization_undo(normalization, out, self._flattened(source.to(out.dtype)), self.d_in)
        if source is not None and self._has_heads(source):
            return out.reshape(*out.shape[:-1], *source.shape[-2:])
        return out

    def reconstruct(self, x: Tensor) -> Tensor:
        """decode(encode(x)): the SAE's reconstruction of x, in x's shape."""
        return self.decode(self.encode(x), source=x)

    def _has_heads(self, x: Tensor) -> bool:
        return self.config.reshape_activations == "hook_z" and x.shape[-1] != self.d_in

    def _flattened(self, x: Tensor) -> Tensor:
        return x.flatten(-2) if self._has_heads(x) else x

    def _sae_in(self, x: Tensor) -> Tensor:
        """What the encoder multiplies: flattened heads, normalized, less b_dec where the config says so."""
        sae_in = _normalization_apply(self.config.normalize_activations, self._flattened(x.to(self.W_enc.dtype)),
                                      self.d_in)
        return sae_in - self.b_dec if self.config.apply_b_dec_to_input else sae_in


def _norm(x: Tensor) -> Tensor:
    norm: Tensor = x.norm(dim=-1, keepdim=True)
    return norm


def _normalization_apply(normalization: str, x: Tensor, d_in: int) -> Tensor:
    if normalization == "constant_norm_rescale":
        return x * (math.sqrt(d_in) / _norm(x))
    if normalization == "layer_norm":
        centered = x - x.mean(dim=-1, keepdim=True)
        return centered / (centered.std(dim=-1, keepdim=True) + LAYER_NORM_EPS)
    return x  # expected_average_only_in is folded into the weights when they are loaded


def _normalization_undo(normalization: str, out: Tensor, source: Tensor, d_in: int) -> Tensor:
    if normalization == "constant_norm_rescale":
        return out / (math.sqrt(d_in) / _norm(source))
    mean = source.mean(dim=-1, keepdim=True)
    return out * (source - mean).std(dim=-1, keepdim=True) + mean


def _hidden_pre(sae: SparseAutoencoder, sae_in: Tensor, features: slice) -> Tensor:
    return sae_in @ sae.W_enc[:, features] + sae.b_enc[features]  # [..., f]


def _relu_encode(sae: SparseAutoencoder, sae_in: Tensor, features: slice) -> Tensor:
    return torch.relu(_hidden_pre(sae, sae_in, features))


def _jumprelu_encode(sae: SparseAutoencoder, sae_in: Tensor, features: slice) -> Tensor:
    assert sae.threshold is not None
    hidden_pre = _hidden_pre(sae, sae_in, features)
    # SAELens keeps the ReLU under the jump, so a negative threshold still never yields negative acts.
    return torch.relu(hidden_pre) * (hidden_pre > sae.threshold[features]).to(hidden_pre.dtype)


def _topk_encode(sae: SparseAutoencoder, sae_in: Tensor, features: slice) -> Tensor:
    assert sae.config.k is not None
    hidden_pre = _hidden_pre(sae, sae_in, features)
    if sae.config.rescale_acts_by_decoder_norm:
        hidden_pre = hidden_pre * sae.W_dec.norm(dim=-1)
    values, indices = torch.topk(hidden_pre, k=sae.config.k, dim=-1, sorted=False)  # [..., k]
    return torch.zeros_like(hidden_pre).scatter_(-1, indices, values.relu())


def _gated_encode(sae: SparseAutoencoder, sae_in: Tensor, features: slice) -> Tensor:
    # The gate decides which features fire, the magnitude path (sharing W_enc, rescaled) how strongly.
    W_enc = sae.W_enc[:, features]
    gate = (sae_in @ W_enc + sae.tensors["b_gate"][features]) > 0
    magnitude = sae_in @ (W_enc * sae.tensors["r_mag"][features].exp()) + sae.tensors["b_mag"][features]
    return gate.to(sae_in.dtype) * torch.relu(magnitude)


def _linear_decode(sae: SparseAutoencoder, acts: Tensor) -> Tensor:
    return acts @ sae.W_dec + sae.b_dec


def _topk_decode(sae: SparseAutoencoder, acts: Tensor) -> Tensor:
    if sae.config.rescale_acts_by_decoder_norm:
        acts = acts * (1 / sae.W_dec.norm(dim=-1))
    return acts @ sae.W_dec + sae.b_dec


@dataclass(frozen=True)
class ArchitectureSpec:
    """What one architecture stores (tensor -> named dims), how it encodes and how it decodes."""

    tensor_dims: dict[str, tuple[str, ...]]
    # (sae, sae_in [..., d_in] already normalized and shifted, the features' slice) -> acts [..., f]
    encode: Callable[[SparseAutoencoder, Tensor, slice], Tensor]
    elementwise: bool  # each feature's activation depends on its own pre-activation only
    # (sae, acts [..., d_sae]) -> reconstruction [..., d_in] before normalization is undone
    decode: Callable[[SparseAutoencoder, Tensor], Tensor] = _linear_decode


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "standard": ArchitectureSpec(ARCHITECTURE_TENSORS["standard"], _relu_encode, elementwise=True),
    "jumprelu": ArchitectureSpec(ARCHITECTURE_TENSORS["jumprelu"], _jumprelu_encode, elementwise=True),
    "topk": ArchitectureSpec(ARCHITECTURE_TENSORS["topk"], _topk_encode, elementwise=False, decode=_topk_decode),
    "gated": ArchitectureSpec(ARCHITECTURE_TENSORS["gated"], _gated_encode, elementwise=True),
}


def sae_load(
    directory: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> SparseAutoencoder:
    """Load the SAE saved in directory: SAELens's cfg.json + sae_weights.safetensors, or a dictionary_learning
    trainer folder's config.json + ae.pt.

    Its configs, tensor names, dtypes and shapes are checked again, as reading needs them; its values are not
    scanned again, as the upload that stored it did that (sae_files_check).
    """
    files = sae_files_read(directory)
    try:
        tensors = {name: _tensor(file_tensor) for name, file_tensor in files.tensors.items()}
    except (OSError, ValueError) as error:
        raise SaeFormatError(f"{files.weights_filename} could not be read: {error}", files.weights_filename) from error
    tensors = _scaling_factor_folded(files.config, tensors)
    return SparseAutoencoder(
        files.config, {name: tensor.to(device=device, dtype=dtype) for name, tensor in tensors.items()}
    )


def _tensor(file_tensor: FileTensor) -> Tensor:
    """The tensor a FileTensor describes, mapped from its file (copy-on-write) until it is moved or cast."""
    array = np.asarray(file_tensor.array(), order="C")  # keeps a 0-d array 0-d, unlike ascontiguousarray
    if file_tensor.dtype == "BF16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)  # numpy has no bfloat16: its bits
    return torch.from_numpy(array)


def _scaling_factor_folded(config: SaeConfig, tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Fold expected_average_only_in's factor into the weights, as SAELens does for its own releases."""
    factor = config.norm_scaling_factor
    if factor is None:
        return tensors
    return {
        **tensors,
        "W_enc": tensors["W_enc"] * factor,
        "W_dec": tensors["W_dec"] / factor,
        "b_dec": tensors["b_dec"] / factor,
    }
