"""Reading, checking and running SAELens-format sparse autoencoders (cfg.json + sae_weights.safetensors)."""

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
# safetensors itself refuses headers above 100 MB, so a longer one means the file is something else.
MAX_HEADER_BYTES = 100_000_000
# Bytes per element of the dtypes an SAE may be stored in; the others are not worth supporting.
DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2}
# Activation functions SAELens had before architectures were named; anything else changes encode.
SUPPORTED_ACTIVATION_FNS = ("relu", "topk")


class SaeFormatError(ValueError):
    """An uploaded SAE is unusable; the message names the problem so the researcher can fix it."""


@dataclass(frozen=True)
class SaeConfig:
    """The parts of cfg.json that decide how an SAE encodes; `raw` keeps everything else."""

    architecture: str
    d_in: int
    d_sae: int
    hook_name: str | None
    apply_b_dec_to_input: bool
    dtype: str
    raw: dict[str, Any]
    k: int | None = None  # topk only: active features per token
    rescale_acts_by_decoder_norm: bool = False  # topk only: rank pre-activations by |W_dec row| too


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the safetensors header describes it; offsets count from the end of the header."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


class SparseAutoencoder:
    """The weights of a checked SAE, and its encoder; decoding is not needed for dashboards."""

    def __init__(self, config: SaeConfig, tensors: dict[str, Tensor]) -> None:
        self.config = config
        self.d_in = config.d_in
        self.d_sae = config.d_sae
        self.W_enc = tensors["W_enc"]  # [d_in, d_sae]
        self.W_dec = tensors["W_dec"]  # [d_sae, d_in]
        self.b_enc = tensors["b_enc"]  # [d_sae]
        self.b_dec = tensors["b_dec"]  # [d_in]
        self.threshold = tensors.get("threshold")  # [d_sae], jumprelu only
        self._spec = ARCHITECTURES[config.architecture]

    @property
    def device(self) -> torch.device:
        return self.W_enc.device

    def encode(self, x: Tensor) -> Tensor:
        """Feature activations [..., d_sae] of x [..., d_in], exactly as SAELens's encode computes them."""
        return self.encode_features(x, 0, self.d_sae)

    def encode_features(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Activations [..., stop - start] of features start..stop-1 only.

        Where each feature's activation depends on its own pre-activation alone, only those columns of
        W_enc are multiplied, so a huge SAE can be encoded a slice of features at a time; top-k, which
        ranks all features against each other, encodes them all and keeps the slice.
        """
        if not self._spec.elementwise and (start, stop) != (0, self.d_sae):
            return self.encode(x)[..., start:stop]
        sae_in = x.to(self.W_enc.dtype)  # [..., d_in]
        if self.config.apply_b_dec_to_input:
            sae_in = sae_in - self.b_dec
        hidden_pre = sae_in @ self.W_enc[:, start:stop] + self.b_enc[start:stop]  # [..., stop - start]
        return self._spec.activation(self, hidden_pre, slice(start, stop))


def _relu(sae: SparseAutoencoder, hidden_pre: Tensor, features: slice) -> Tensor:
    return torch.relu(hidden_pre)


def _jumprelu(sae: SparseAutoencoder, hidden_pre: Tensor, features: slice) -> Tensor:
    assert sae.threshold is not None
    # SAELens keeps the ReLU under the jump, so a negative threshold still never yields negative acts.
    return torch.relu(hidden_pre) * (hidden_pre > sae.threshold[features]).to(hidden_pre.dtype)


def _topk(sae: SparseAutoencoder, hidden_pre: Tensor, features: slice) -> Tensor:
    assert sae.config.k is not None
    if sae.config.rescale_acts_by_decoder_norm:
        hidden_pre = hidden_pre * sae.W_dec.norm(dim=-1)
    values, indices = torch.topk(hidden_pre, k=sae.config.k, dim=-1, sorted=False)  # [..., k]
    return torch.zeros_like(hidden_pre).scatter_(-1, indices, values.relu())


@dataclass(frozen=True)
class ArchitectureSpec:
    """What one architecture stores (tensor -> named dims) and how it turns pre-activations into acts."""

    tensor_dims: dict[str, tuple[str, ...]]
    # (sae, hidden_pre [..., f], the f features' slice) -> acts [..., f]
    activation: Callable[[SparseAutoencoder, Tensor, slice], Tensor]
    elementwise: bool  # each feature's activation depends on its own pre-activation only


_LINEAR_TENSORS = {"W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_enc": ("d_sae",), "b_dec": ("d_in",)}

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "standard": ArchitectureSpec(_LINEAR_TENSORS, _relu, elementwise=True),
    "jumprelu": ArchitectureSpec({**_LINEAR_TENSORS, "threshold": ("d_sae",)}, _jumprelu, elementwise=True),
    "topk": ArchitectureSpec(_LINEAR_TENSORS, _topk, elementwise=False),
}


def sae_config_parse(text: str) -> SaeConfig:
    """Parse cfg.json as SAELens 6 writes it, or as earlier versions did (hook_point, activation_fn_str)."""
    raw = _json_object_parse(text)
    architecture = _architecture_name(raw)
    _normalization_check(raw)
    d_sae = _positive_int(raw, "d_sae")
    return SaeConfig(
        architecture=architecture,
        d_in=_positive_int(raw, "d_in"),
        d_sae=d_sae,
        hook_name=_hook_name(raw),
        apply_b_dec_to_input=_bool(raw, "apply_b_dec_to_input", default=True),
        dtype=str(raw.get("dtype", "float32")),
        raw=raw,
        k=_topk_k(raw, d_sae) if architecture == "topk" else None,
        rescale_acts_by_decoder_norm=_bool(raw, "rescale_acts_by_decoder_norm", default=False),
    )


def _json_object_parse(text: str) -> dict[str, Any]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise SaeFormatError(
            f"{CFG_FILENAME} is not valid JSON: {error.msg} at line {error.lineno} column {error.colno}"
        ) from error
    if not isinstance(raw, dict):
        raise SaeFormatError(f"{CFG_FILENAME} must hold a JSON object, not a {type(raw).__name__}")
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


def _normalization_check(raw: dict[str, Any]) -> None:
    value = raw.get("normalize_activations", "none")
    # Configs before SAELens 6 wrote a boolean, where True meant "expected_average_only_in".
    if value is None or value is False:
        value = "none"
    if value != "none":
        raise SaeFormatError(
            f"normalize_activations {value!r} is not supported yet; only SAEs with normalize_activations 'none' are"
        )


def _positive_int(raw: dict[str, Any], key: str) -> int:
    if key not in raw:
        raise SaeFormatError(f"{CFG_FILENAME} has no {key}")
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SaeFormatError(f"{CFG_FILENAME} says {key}={value!r}; it must be a positive integer")
    return value


def _bool(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise SaeFormatError(f"{CFG_FILENAME} says {key}={value!r}; it must be true or false")
    return value


def _hook_name(raw: dict[str, Any]) -> str | None:
    metadata = raw.get("metadata")
    value = metadata.get("hook_name") if isinstance(metadata, dict) else None
    value = value or raw.get("hook_name") or raw.get("hook_point")
    return None if value is None else str(value)


def _topk_k(raw: dict[str, Any], d_sae: int) -> int:
    kwargs = raw.get("activation_fn_kwargs")
    value = raw.get("k", kwargs.get("k") if isinstance(kwargs, dict) else None)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= d_sae:
        raise SaeFormatError(f"a topk SAE needs k in {CFG_FILENAME} between 1 and d_sae={d_sae}, got {value!r}")
    return value


def sae_weights_check(path: Path, config: SaeConfig) -> None:
    """Raise SaeFormatError unless path holds exactly the architecture's tensors, consistent and finite."""
    entries, data_bytes = _safetensors_header_read(path)
    _tensor_extents_check(path.name, entries, data_bytes)
    spec = ARCHITECTURES[config.architecture]
    _tensor_names_check(entries, spec, config.architecture)
    _tensor_dtypes_check(entries)
    _tensor_shapes_check(entries, spec, config)
    _tensor_values_check(path, entries)


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


def _tensor_names_check(entries: dict[str, TensorEntry], spec: ArchitectureSpec, architecture: str) -> None:
    expected = list(spec.tensor_dims)
    unexpected = [name for name in entries if name not in spec.tensor_dims]
    missing = [name for name in expected if name not in entries]
    if unexpected:
        also_missing = f" (missing {', '.join(missing)})" if missing else ""
        raise SaeFormatError(
            f"tensor {', '.join(unexpected)} is not expected for architecture {architecture}; "
            f"expected {', '.join(expected)}{also_missing}"
        )
    if missing:
        raise SaeFormatError(f"missing tensor {', '.join(missing)} for architecture {architecture}")


def _tensor_dtypes_check(entries: dict[str, TensorEntry]) -> None:
    for name, entry in entries.items():
        if entry.dtype not in DTYPE_BYTES:
            raise SaeFormatError(
                f"tensor {name} is stored as {entry.dtype}; supported dtypes: {', '.join(DTYPE_BYTES)}"
            )
        if entry.end - entry.begin != math.prod(entry.shape) * DTYPE_BYTES[entry.dtype]:
            raise SaeFormatError(f"tensor {name}: its shape {list(entry.shape)} does not match its byte size")


def _tensor_shapes_check(entries: dict[str, TensorEntry], spec: ArchitectureSpec, config: SaeConfig) -> None:
    seen: dict[str, tuple[str, int]] = {}  # dim name -> first tensor that has it, and its size
    for name, dims in spec.tensor_dims.items():
        shape = entries[name].shape
        if len(shape) != len(dims):
            raise SaeFormatError(f"{name} is {list(shape)} but should be [{', '.join(dims)}]")
        for dim, size in zip(dims, shape, strict=True):
            first_name, first_size = seen.setdefault(dim, (name, size))
            if size != first_size:
                raise SaeFormatError(
                    f"{name} is {list(shape)} but {first_name} is {list(entries[first_name].shape)}: "
                    f"they disagree on {dim} ({size} vs {first_size})"
                )
    for dim, (name, size) in seen.items():
        expected = getattr(config, dim)
        if size != expected:
            raise SaeFormatError(f"{name} is {list(entries[name].shape)} but {CFG_FILENAME} says {dim}={expected}")


def _tensor_values_check(path: Path, entries: dict[str, TensorEntry]) -> None:
    # One tensor at a time, memory-mapped, so checking never needs the whole file in memory at once.
    try:
        with safe_open(path, framework="pt") as file:
            for name in entries:
                tensor = file.get_tensor(name)
                bad = int((~torch.isfinite(tensor)).sum())
                if bad:
                    raise SaeFormatError(f"tensor {name} has {bad} NaN or infinite values")
    except SafetensorError as error:
        raise SaeFormatError(f"{path.name} could not be read: {error}") from error


def sae_load(
    directory: Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> SparseAutoencoder:
    """Check and load the SAE saved in directory (cfg.json + sae_weights.safetensors)."""
    config = sae_config_parse(_text_read(_required_file(directory / CFG_FILENAME)))
    weights_path = _required_file(directory / WEIGHTS_FILENAME)
    sae_weights_check(weights_path, config)
    tensors = load_file(weights_path, device="cpu")
    return SparseAutoencoder(config, {name: tensor.to(device=device, dtype=dtype) for name, tensor in tensors.items()})


def _text_read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SaeFormatError(f"{path.name} is not UTF-8 text: {error}") from error


def _required_file(path: Path) -> Path:
    if not path.is_file():
        raise SaeFormatError(f"{path.name} is missing")
    return path
