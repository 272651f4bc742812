"""Reading, checking and running sparse autoencoders: SAELens directories (cfg.json + sae_weights.safetensors)
and dictionary_learning trainer folders (config.json + ae.pt), both turned into SAELens's conventions."""

import json
import math
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor

from workers.compute.sae_dictionary_learning import (
    DICTIONARY_LEARNING_CONFIG_FILENAME,
    DICTIONARY_LEARNING_WEIGHTS_FILENAME,
    dictionary_learning_read,
)
from workers.compute.sae_errors import SaeFormatError

__all__ = [
    "ARCHITECTURES",
    "SaeConfig",
    "SaeFormatError",
    "SparseAutoencoder",
    "sae_check",
    "sae_config_parse",
    "sae_load",
    "sae_weights_check",
]

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
# safetensors itself refuses headers above 100 MB, so a longer one means the file is something else.
MAX_HEADER_BYTES = 100_000_000
# Bytes per element of the dtypes an SAE may be stored in; the others are not worth supporting.
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
TORCH_DTYPE_NAMES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
# Activation functions SAELens had before architectures were named; anything else changes encode.
SUPPORTED_ACTIVATION_FNS = ("relu", "topk")
# SAELens's normalize_activations; the last two depend on each input, so decode needs that input too.
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
PER_INPUT_NORMALIZATIONS = ("constant_norm_rescale", "layer_norm")
LAYER_NORM_EPS = 1e-5  # SAELens's, added to the standard deviation on the way in only
RESHAPES = ("none", "hook_z")


@dataclass(frozen=True)
class SaeConfig:
    """The parts of the config that decide how an SAE encodes and decodes; `raw` keeps everything else."""

    architecture: str
    d_in: int
    d_sae: int
    hook_name: str | None
    apply_b_dec_to_input: bool
    dtype: str
    raw: dict[str, Any]
    k: int | None = None  # topk only: active features per token
    rescale_acts_by_decoder_norm: bool = False  # topk only: rank pre-activations by |W_dec row| too
    normalize_activations: str = "none"
    # expected_average_only_in: inputs were multiplied by this in training; folded into the weights on load.
    norm_scaling_factor: float | None = None
    reshape_activations: str = "none"  # "hook_z": inputs [..., n_heads, d_head] are flattened to d_in
    config_filename: str = CFG_FILENAME  # the file the config came from, for messages


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the safetensors header describes it; offsets count from the end of the header."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


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


_LINEAR_TENSORS = {"W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_enc": ("d_sae",), "b_dec": ("d_in",)}
_GATED_TENSORS = {
    "W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_dec": ("d_in",),
    "b_gate": ("d_sae",), "b_mag": ("d_sae",), "r_mag": ("d_sae",),
}

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "standard": ArchitectureSpec(_LINEAR_TENSORS, _relu_encode, elementwise=True),
    "jumprelu": ArchitectureSpec({**_LINEAR_TENSORS, "threshold": ("d_sae",)}, _jumprelu_encode, elementwise=True),
    "topk": ArchitectureSpec(_LINEAR_TENSORS, _topk_encode, elementwise=False, decode=_topk_decode),
    "gated": ArchitectureSpec(_GATED_TENSORS, _gated_encode, elementwise=True),
}


def sae_config_parse(text: str, filename: str = CFG_FILENAME) -> SaeConfig:
    """Parse cfg.json as SAELens 6 writes it, or as earlier versions did (hook_point, activation_fn_str)."""
    return sae_config_from_dict(_json_object_parse(text, filename), filename)


def sae_config_from_dict(raw: dict[str, Any], filename: str = CFG_FILENAME) -> SaeConfig:
    """The config a SAELens-style dict describes; `filename` is named in messages."""
    try:
        architecture = _architecture_name(raw)
        d_sae = _positive_int(raw, "d_sae", filename)
        normalization = _normalization(raw)
        return SaeConfig(
            architecture=architecture,
            d_in=_positive_int(raw, "d_in", filename),
            d_sae=d_sae,
            hook_name=_hook_name(raw),
            apply_b_dec_to_input=_bool(raw, "apply_b_dec_to_input", True, filename),
            dtype=str(raw.get("dtype", "float32")),
            raw=raw,
            k=_topk_k(raw, d_sae, filename) if architecture == "topk" else None,
            rescale_acts_by_decoder_norm=_bool(raw, "rescale_acts_by_decoder_norm", False, filename),
            normalize_activations=normalization,
            norm_scaling_factor=_norm_scaling_factor(raw, filename) if normalization == "expected_average_only_in"
            else None,
            reshape_activations=_reshape(raw),
            config_filename=filename,
        )
    except SaeFormatError as error:
        raise SaeFormatError(str(error), filename) from None


def _json_object_parse(text: str, filename: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise SaeFormatError(
            f"{filename} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}", filename
        ) from error
    if not isinstance(raw, dict):
        raise SaeFormatError(f"{filename} must hold a JSON object, not a {type(raw).__name__}", filename)
    return raw


def _activation_fn(raw: dict[str, Any]) -> str | None:
    value = raw.get("activation_fn", raw.get("activation_fn_str"))
    return None if value is None else str(value)


def _architecture_name(raw: dict[str, Any]) -> str:
    activation_fn = _activation_fn(raw)
    if activation_fn is not None and activation_fn not in SUPPORTED_ACTIVATION_FNS:
        raise SaeFormatError(
            f"activation_fn {activation_fn!r} is not supported; supported: {', '.join(SUPPORTED_ACTIVATION_FNS)}"
        )
    # Before SAELens 6 a TopK SAE was a "standard" one whose activation function was topk.
    architecture = "topk" if activation_fn == "topk" else str(raw.get("architecture", "standard"))
    if architecture not in ARCHITECTURES:
        raise SaeFormatError(
            f"architecture {architecture!r} is not supported; supported architectures: {', '.join(ARCHITECTURES)}"
        )
    return architecture


def _normalization(raw: dict[str, Any]) -> str:
    value = raw.get("normalize_activations", "none")
    # Configs before SAELens 6 wrote a boolean, where True meant "expected_average_only_in".
    if value is None or value is False:
        return "none"
    if value is True:
        return "expected_average_only_in"
    if value not in NORMALIZATIONS:
        raise SaeFormatError(
            f"normalize_activations {value!r} is not supported; supported: {', '.join(NORMALIZATIONS)}"
        )
    return str(value)


def _norm_scaling_factor(raw: dict[str, Any], filename: str) -> float:
    # SAELens keeps this factor in its list of releases, not in cfg.json, so an uploaded SAE must bring it.
    value = raw.get("norm_scaling_factor")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise SaeFormatError(
            "normalize_activations 'expected_average_only_in' scales inputs by the factor the SAE was trained with; "
            f'add it to {filename} as "norm_scaling_factor": <positive number> (got {value!r})'
        )
    return float(value)


def _sae_lens_major_version(raw: dict[str, Any]) -> int | None:
    metadata = raw.get("metadata")
    version = raw.get("sae_lens_version") or (metadata.get("sae_lens_version") if isinstance(metadata, dict) else None)
    head = str(version).split(".", 1)[0] if version else ""
    return int(head) if head.isdigit() else None


def _reshape(raw: dict[str, Any]) -> str:
    value = raw.get("reshape_activations")
    if value is None:
        # SAELens 6 defaults to no reshaping; before it, a hook_z SAE always flattened its heads.
        pre_6 = (_sae_lens_major_version(raw) or 0) < 6
        value = "hook_z" if pre_6 and "hook_z" in (_hook_name(raw) or "") else "none"
    if value not in RESHAPES:
        raise SaeFormatError(f"reshape_activations {value!r} is not supported; supported: {', '.join(RESHAPES)}")
    return str(value)


def _positive_int(raw: dict[str, Any], key: str, filename: str) -> int:
    if key not in raw:
        raise SaeFormatError(f"{filename} has no {key}")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SaeFormatError(f"{filename} says {key}={value!r}; it must be a positive integer")
    return value


def _bool(raw: dict[str, Any], key: str, default: bool, filename: str) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise SaeFormatError(f"{filename} says {key}={value!r}; it must be true or false")
    return value


def _hook_name(raw: dict[str, Any]) -> str | None:
    metadata = raw.get("metadata")
    value = metadata.get("hook_name") if isinstance(metadata, dict) else None
    value = value or raw.get("hook_name") or raw.get("hook_point")
    return None if value is None else str(value)


def _topk_k(raw: dict[str, Any], d_sae: int, filename: str) -> int:
    kwargs = raw.get("activation_fn_kwargs")
    value = raw.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= d_sae:
        raise SaeFormatError(f"a topk SAE needs k in {filename} between 1 and d_sae={d_sae}, got {value!r}")
    return value


def sae_weights_check(path: Path, config: SaeConfig) -> None:
    """Raise SaeFormatError unless path holds exactly the architecture's tensors, consistent and finite."""
    try:
        entries, data_bytes = _safetensors_header_read(path)
        _tensor_extents_check(path.name, entries, data_bytes)
        _tensor_names_check(entries, config.architecture)
        _tensor_dtypes_check({name: entry.dtype for name, entry in entries.items()})
        for name, entry in entries.items():
            if entry.end - entry.begin != math.prod(entry.shape) * DTYPE_BYTES[entry.dtype]:
                raise SaeFormatError(f"tensor {name}: its shape {list(entry.shape)} does not match its byte size")
        _tensor_shapes_check({name: entry.shape for name, entry in entries.items()}, config)
        _tensor_values_check(path, entries)
    except SaeFormatError as error:
        raise SaeFormatError(str(error), path.name) from None


def _safetensors_header_read(path: Path) -> tuple[dict[str, TensorEntry], int]:
    """The header's tensors and the number of bytes after the header, reading only the header."""
    file_bytes = path.stat().st_size
    not_safetensors = f"{path.name} is not a safetensors file"
    if file_bytes < 8:
        raise SaeFormatError(f"{not_safetensors}: it is only {file_bytes} bytes long")
    with path.open("rb") as file:
        (header_bytes,) = struct.unpack("<Q", file.read(8))
        if header_bytes > MAX_HEADER_BYTES:
            raise SaeFormatError(f"{not_safetensors}: its first 8 bytes give an impossible header length")
        if header_bytes > file_bytes - 8:
            raise SaeFormatError(
                f"{path.name} is truncated: its header should be {header_bytes} bytes but the file has {file_bytes}"
            )
        header_text = file.read(header_bytes)
    try:
        header = json.loads(header_text)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SaeFormatError(f"{not_safetensors}: its header is not JSON ({error})") from error
    if not isinstance(header, dict):
        raise SaeFormatError(f"{not_safetensors}: its header is not a JSON object")
    entries = {name: _tensor_entry(path.name, name, info) for name, info in header.items() if name != "__metadata__"}
    return entries, file_bytes - 8 - header_bytes


def _tensor_entry(filename: str, name: str, info: Any) -> TensorEntry:
    malformed = SaeFormatError(f"{filename} is not a safetensors file: its header entry for {name} is malformed")
    if not isinstance(info, dict):
        raise malformed
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or not _int_list(shape) or not _int_list(offsets) or len(offsets) != 2:
        raise malformed
    if offsets[0] > offsets[1]:
        raise malformed
    return TensorEntry(dtype=dtype, shape=tuple(shape), begin=offsets[0], end=offsets[1])


def _int_list(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(isinstance(item, int) and item >= 0 for item in value)


def _tensor_extents_check(filename: str, entries: dict[str, TensorEntry], data_bytes: int) -> None:
    described = max((entry.end for entry in entries.values()), default=0)
    if described > data_bytes:
        raise SaeFormatError(
            f"{filename} is truncated: its header describes {described} bytes of tensors but the file has {data_bytes}"
        )
    # safetensors refuses a file whose tensors leave gaps, overlap or stop before the end of the file.
    expected_begin = 0
    for name, entry in sorted(entries.items(), key=lambda item: item[1].begin):
        if entry.begin != expected_begin:
            raise SaeFormatError(f"{filename} is corrupt: the bytes of tensor {name} overlap or leave a gap")
        expected_begin = entry.end
    if expected_begin != data_bytes:
        raise SaeFormatError(f"{filename} is corrupt: it has {data_bytes - expected_begin} bytes after its last tensor")


def _tensor_names_check(names: Iterable[str], architecture: str) -> None:
    spec = ARCHITECTURES[architecture]
    names = list(names)
    expected = list(spec.tensor_dims)
    unexpected = [name for name in names if name not in spec.tensor_dims]
    missing = [name for name in expected if name not in names]
    if unexpected:
        also_missing = f" (missing {', '.join(missing)})" if missing else ""
        raise SaeFormatError(
            f"tensor {', '.join(unexpected)} is not expected for architecture {architecture}; "
            f"expected {', '.join(expected)}{also_missing}"
        )
    if missing:
        raise SaeFormatError(f"missing tensor {', '.join(missing)} for architecture {architecture}")


def _tensor_dtypes_check(dtypes: dict[str, str]) -> None:
    for name, dtype in dtypes.items():
        if dtype not in DTYPE_BYTES:
            raise SaeFormatError(f"tensor {name} is stored as {dtype}; supported dtypes: {', '.join(DTYPE_BYTES)}")


def _tensor_shapes_check(shapes: dict[str, tuple[int, ...]], config: SaeConfig) -> None:
    seen: dict[str, tuple[str, int]] = {}  # dim name -> first tensor that has it, and its size
    for name, dims in ARCHITECTURES[config.architecture].tensor_dims.items():
        shape = shapes[name]
        if len(shape) != len(dims):
            raise SaeFormatError(f"{name} is {list(shape)} but should be [{', '.join(dims)}]")
        for dim, size in zip(dims, shape, strict=True):
            first_name, first_size = seen.setdefault(dim, (name, size))
            if size != first_size:
                raise SaeFormatError(
                    f"{name} is {list(shape)} but {first_name} is {list(shapes[first_name])}: "
                    f"they disagree on {dim} ({size} vs {first_size})"
                )
    for dim, (name, size) in seen.items():
        expected = getattr(config, dim)
        if size != expected:
            raise SaeFormatError(f"{name} is {list(shapes[name])} but {config.config_filename} says {dim}={expected}")


def _finite_check(name: str, tensor: Tensor) -> None:
    bad = int((~torch.isfinite(tensor)).sum())
    if bad:
        raise SaeFormatError(f"tensor {name} has {bad} NaN or infinite values")


def _tensor_values_check(path: Path, entries: dict[str, TensorEntry]) -> None:
    # One tensor at a time, memory-mapped, so checking never needs the whole file in memory at once.
    try:
        with safe_open(path, framework="pt") as file:
            for name in entries:
                _finite_check(name, file.get_tensor(name))
    except SafetensorError as error:
        raise SaeFormatError(f"{path.name} could not be read: {error}") from error


def _tensors_check(tensors: dict[str, Tensor], config: SaeConfig, filename: str) -> None:
    """The checks sae_weights_check makes on a file's header, made on tensors already in memory."""
    try:
        _tensor_names_check(tensors, config.architecture)
        _tensor_dtypes_check({name: TORCH_DTYPE_NAMES.get(t.dtype, str(t.dtype)) for name, t in tensors.items()})
        _tensor_shapes_check({name: tuple(tensor.shape) for name, tensor in tensors.items()}, config)
        for name, tensor in tensors.items():
            _finite_check(name, tensor)
    except SaeFormatError as error:
        raise SaeFormatError(str(error), filename) from None


def sae_check(directory: Path) -> SaeConfig:
    """Check everything about the SAE saved in directory, in either format, and return its config."""
    if _is_dictionary_learning(directory):
        return _dictionary_learning_load(directory)[0]
    config = _sae_lens_config_read(directory)
    sae_weights_check(_required_file(directory / WEIGHTS_FILENAME), config)
    return config


def sae_load(
    directory: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> SparseAutoencoder:
    """Check and load the SAE saved in directory: SAELens's cfg.json + sae_weights.safetensors, or a
    dictionary_learning trainer folder's config.json + ae.pt."""
    if _is_dictionary_learning(directory):
        config, tensors = _dictionary_learning_load(directory)
    else:
        config = _sae_lens_config_read(directory)
        weights_path = _required_file(directory / WEIGHTS_FILENAME)
        sae_weights_check(weights_path, config)
        tensors = _safetensors_read(weights_path)
    tensors = _scaling_factor_folded(config, tensors)
    return SparseAutoencoder(config, {name: tensor.to(device=device, dtype=dtype) for name, tensor in tensors.items()})


def _is_dictionary_learning(directory: Path) -> bool:
    return (directory / DICTIONARY_LEARNING_WEIGHTS_FILENAME).exists() and not (directory / CFG_FILENAME).exists()


def _sae_lens_config_read(directory: Path) -> SaeConfig:
    return sae_config_parse(_text_read(_required_file(directory / CFG_FILENAME)))


def _dictionary_learning_load(directory: Path) -> tuple[SaeConfig, dict[str, Tensor]]:
    raw, tensors = dictionary_learning_read(directory)
    config = sae_config_from_dict(raw, DICTIONARY_LEARNING_CONFIG_FILENAME)
    _tensors_check(tensors, config, DICTIONARY_LEARNING_WEIGHTS_FILENAME)
    return config, tensors


def _safetensors_read(path: Path) -> dict[str, Tensor]:
    try:
        with safe_open(path, framework="pt") as file:
            return {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except SafetensorError as error:
        raise SaeFormatError(f"{path.name} could not be read: {error}", path.name) from error


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


def _text_read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SaeFormatError(f"{path.name} is not UTF-8 text: {error}", path.name) from error


def _required_file(path: Path) -> Path:
    if not path.is_file():
        raise SaeFormatError(f"{path.name} is missing", path.name)
    return path
