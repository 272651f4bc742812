"""What an SAE's files must hold, checked without torch: configs, safetensors headers, ae.pt, and every value.

The web process checks an upload here before storing it (sae_files_check), reading only configs, headers and
raw bits, a chunk at a time; the worker's loader (workers.compute.sae) reads the same files through
sae_files_read, which makes every check but the scan of values that the upload already made.
"""

import json
import math
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from workers.compute.file_tensors import ELEMENT_TYPES, FileTensor, contiguous_strides
from workers.compute.sae_dictionary_learning import dictionary_learning_read
from workers.compute.sae_errors import SaeFormatError

__all__ = [
    "ARCHITECTURE_TENSORS",
    "CFG_FILENAME",
    "DICTIONARY_LEARNING_CONFIG_FILENAME",
    "DICTIONARY_LEARNING_FILES",
    "DICTIONARY_LEARNING_WEIGHTS_FILENAME",
    "SAE_LENS_FILES",
    "WEIGHTS_FILENAME",
    "SaeConfig",
    "SaeFiles",
    "SaeFormatError",
    "sae_config_from_dict",
    "sae_config_parse",
    "sae_files_check",
    "sae_files_read",
    "sae_weights_check",
    "sae_weights_read",
]

# The files of an SAE, in each format: SAELens's directory, and a dictionary_learning trainer folder.
CFG_FILENAME = "cfg.json"
WEIGHTS_FILENAME = "sae_weights.safetensors"
DICTIONARY_LEARNING_CONFIG_FILENAME = "config.json"
DICTIONARY_LEARNING_WEIGHTS_FILENAME = "ae.pt"
SAE_LENS_FILES = (CFG_FILENAME, WEIGHTS_FILENAME)
DICTIONARY_LEARNING_FILES = (DICTIONARY_LEARNING_CONFIG_FILENAME, DICTIONARY_LEARNING_WEIGHTS_FILENAME)
# safetensors itself refuses headers above 100 MB, so a longer one means the file is something else.
MAX_HEADER_BYTES = 100_000_000
# The dtypes an SAE may be stored in; the others are not worth supporting.
SAE_DTYPES = ("F32", "F16", "BF16")
# Activation functions SAELens had before architectures were named; anything else changes encode.
SUPPORTED_ACTIVATION_FNS = ("relu", "topk")
# SAELens's normalize_activations; the last two depend on each input, so decode needs that input too.
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
RESHAPES = ("none", "hook_z")

_LINEAR_TENSORS = {"W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_enc": ("d_sae",), "b_dec": ("d_in",)}
_GATED_TENSORS = {
    "W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_dec": ("d_in",),
    "b_gate": ("d_sae",), "b_mag": ("d_sae",), "r_mag": ("d_sae",),
}
# What each architecture stores: tensor name -> its dims, named after SaeConfig's fields. The encoders that use
# them are in workers.compute.sae.ARCHITECTURES, keyed the same.
ARCHITECTURE_TENSORS: dict[str, dict[str, tuple[str, ...]]] = {
    "standard": _LINEAR_TENSORS,
    "jumprelu": {**_LINEAR_TENSORS, "threshold": ("d_sae",)},
    "topk": _LINEAR_TENSORS,
    "gated": _GATED_TENSORS,
}


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
class SaeFiles:
    """An SAE's config and where each of its tensors (by SAELens name) lies in its weights file."""

    config: SaeConfig
    tensors: dict[str, FileTensor]
    weights_filename: str


@dataclass(frozen=True)
class TensorEntry:
    """One tensor as the safetensors header describes it; offsets count from the end of the header."""

    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def sae_files_check(directory: Path) -> SaeConfig:
    """Check everything about the SAE saved in directory, in either format, every value included; its config."""
    files = sae_files_read(directory)
    _tensor_values_check(files.tensors, files.weights_filename)
    return files.config


def sae_files_read(directory: Path) -> SaeFiles:
    """The SAE saved in directory, with every check that needs no tensor value: configs, names, dtypes, shapes."""
    if _is_dictionary_learning(directory):
        return _dictionary_learning_files(directory)
    config = sae_config_parse(_text_read(_required_file(directory / CFG_FILENAME)))
    return SaeFiles(config, sae_weights_read(_required_file(directory / WEIGHTS_FILENAME), config), WEIGHTS_FILENAME)


def _is_dictionary_learning(directory: Path) -> bool:
    return (directory / DICTIONARY_LEARNING_WEIGHTS_FILENAME).exists() and not (directory / CFG_FILENAME).exists()


def _dictionary_learning_files(directory: Path) -> SaeFiles:
    trainer = dictionary_learning_read(
        directory / DICTIONARY_LEARNING_CONFIG_FILENAME, directory / DICTIONARY_LEARNING_WEIGHTS_FILENAME
    )
    config = sae_config_from_dict(trainer.config, DICTIONARY_LEARNING_CONFIG_FILENAME)
    try:
        _tensors_described_check(trainer.tensors, config)
    except SaeFormatError as error:
        raise SaeFormatError(str(error), DICTIONARY_LEARNING_WEIGHTS_FILENAME) from None
    return SaeFiles(config, trainer.tensors, DICTIONARY_LEARNING_WEIGHTS_FILENAME)


def _tensor_values_check(tensors: dict[str, FileTensor], filename: str) -> None:
    for name, tensor in tensors.items():
        try:
            bad = tensor.nonfinite_count()
        except OSError as error:
            raise SaeFormatError(f"{filename} could not be read: {error}", filename) from error
        if bad:
            raise SaeFormatError(f"tensor {name} has {bad} NaN or infinite values", filename)


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
    if architecture not in ARCHITECTURE_TENSORS:
        raise SaeFormatError(
            f"architecture {architecture!r} is not supported; "
            f"supported architectures: {', '.join(ARCHITECTURE_TENSORS)}"
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
    _tensor_values_check(sae_weights_read(path, config), path.name)


def sae_weights_read(path: Path, config: SaeConfig) -> dict[str, FileTensor]:
    """The tensors of a safetensors file, once its header is shown to describe exactly the architecture's."""
    try:
        header_bytes, entries, data_bytes = _safetensors_header_read(path)
        _tensor_extents_check(path.name, entries, data_bytes)
        _tensor_names_check(entries, config.architecture)
        _tensor_dtypes_check({name: entry.dtype for name, entry in entries.items()})
        for name, entry in entries.items():
            if entry.end - entry.begin != math.prod(entry.shape) * ELEMENT_TYPES[entry.dtype].itemsize:
                raise SaeFormatError(f"tensor {name}: its shape {list(entry.shape)} does not match its byte size")
        _tensor_shapes_check({name: entry.shape for name, entry in entries.items()}, config)
    except SaeFormatError as error:
        raise SaeFormatError(str(error), path.name) from None
    data_start = 8 + header_bytes
    return {
        name: FileTensor(path=path, dtype=entry.dtype, storage_start=data_start + entry.begin,
                         storage_elements=math.prod(entry.shape), shape=entry.shape,
                         strides=contiguous_strides(entry.shape))
        for name, entry in entries.items()
    }


def _safetensors_header_read(path: Path) -> tuple[int, dict[str, TensorEntry], int]:
    """The header's length, its tensors and the number of bytes after it, reading only the header."""
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
    return header_bytes, entries, file_bytes - 8 - header_bytes


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
    tensor_dims = ARCHITECTURE_TENSORS[architecture]
    names = list(names)
    expected = list(tensor_dims)
    unexpected = [name for name in names if name not in tensor_dims]
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
        if dtype not in SAE_DTYPES:
            raise SaeFormatError(f"tensor {name} is stored as {dtype}; supported dtypes: {', '.join(SAE_DTYPES)}")


def _tensor_shapes_check(shapes: dict[str, tuple[int, ...]], config: SaeConfig) -> None:
    seen: dict[str, tuple[str, int]] = {}  # dim name -> first tensor that has it, and its size
    for name, dims in ARCHITECTURE_TENSORS[config.architecture].items():
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


def _tensors_described_check(tensors: dict[str, FileTensor], config: SaeConfig) -> None:
    """The checks sae_weights_read makes on a safetensors header, made on tensors described another way."""
    _tensor_names_check(tensors, config.architecture)
    _tensor_dtypes_check({name: tensor.dtype for name, tensor in tensors.items()})
    _tensor_shapes_check({name: tensor.shape for name, tensor in tensors.items()}, config)


def _text_read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise SaeFormatError(f"{path.name} is not UTF-8 text: {error}", path.name) from error


def _required_file(path: Path) -> Path:
    if not path.is_file():
        raise SaeFormatError(f"{path.name} is missing", path.name)
    return path
