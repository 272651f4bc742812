"""dictionary_learning trainer folders (config.json + ae.pt) read safely and renamed to SAELens's conventions.

ae.pt is a pickle: it is only ever opened with torch.load(weights_only=True), which refuses any pickle
that would import or call something, so a file that tries to run code is refused, never executed.
"""

import json
import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workers.compute.sae_errors import SaeFormatError

DICTIONARY_LEARNING_CONFIG_FILENAME = "config.json"
DICTIONARY_LEARNING_WEIGHTS_FILENAME = "ae.pt"
# dictionary_learning names submodules after nnsight's paths; these are the ones TransformerLens has a hook for.
_SUBMODULE = re.compile(r"^(resid_post|mlp_out|attn_out)_layer_(\d+)$")
_HOOK_OF_SUBMODULE = {"resid_post": "hook_resid_post", "mlp_out": "hook_mlp_out", "attn_out": "hook_attn_out"}


Convert = Callable[[Tensor], Tensor]


def _transposed(tensor: Tensor) -> Tensor:
    return tensor.T.contiguous()


def _kept(tensor: Tensor) -> Tensor:
    return tensor


@dataclass(frozen=True)
class DictClassLayout:
    """How one dictionary_learning class stores an SAE: SAELens name -> (its state-dict name, conversion)."""

    architecture: str
    tensors: dict[str, tuple[str, Convert]]
    apply_b_dec_to_input: bool = True
    ignored: tuple[str, ...] = ()  # buffers its inference encode does not use
    k_from: str | None = None  # state-dict buffer holding topk's k
    scalar_threshold_from: str | None = None  # a single threshold shared by every feature
    extra_cfg: dict[str, Any] = field(default_factory=dict)


_LINEAR: dict[str, tuple[str, Convert]] = {
    "W_enc": ("encoder.weight", _transposed),
    "b_enc": ("encoder.bias", _kept),
    "W_dec": ("decoder.weight", _transposed),
}
_TOPK: dict[str, tuple[str, Convert]] = {**_LINEAR, "b_dec": ("b_dec", _kept)}

DICT_CLASSES: dict[str, DictClassLayout] = {
    "AutoEncoder": DictClassLayout("standard", {**_LINEAR, "b_dec": ("bias", _kept)}),
    # Its inference encode keeps the k largest ReLU'd pre-activations; the threshold is for training stats.
    "AutoEncoderTopK": DictClassLayout("topk", _TOPK, ignored=("threshold",), k_from="k"),
    # At inference BatchTopK keeps every ReLU'd pre-activation above one learned threshold: a JumpReLU.
    "BatchTopKSAE": DictClassLayout("jumprelu", _TOPK, ignored=("k",), scalar_threshold_from="threshold"),
    # It encodes x, not x - b_dec.
    "JumpReluAutoEncoder": DictClassLayout(
        "jumprelu",
        {name: (name, _kept) for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")},
        apply_b_dec_to_input=False,
    ),
    "GatedAutoEncoder": DictClassLayout(
        "gated",
        {
            "W_enc": ("encoder.weight", _transposed),
            "W_dec": ("decoder.weight", _transposed),
            "b_dec": ("decoder_bias", _kept),
            "b_gate": ("gate_bias", _kept),
            "b_mag": ("mag_bias", _kept),
            "r_mag": ("r_mag", _kept),
        },
    ),
}


def dictionary_learning_read(directory: Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """A SAELens-style config dict and SAELens-named tensors for the trainer folder in directory."""
    trainer = _trainer_config(directory / DICTIONARY_LEARNING_CONFIG_FILENAME)
    dict_class = trainer.get("dict_class")
    layout = DICT_CLASSES.get(str(dict_class))
    if layout is None:
        raise SaeFormatError(
            f"dict_class {dict_class!r} is not supported; supported: {', '.join(DICT_CLASSES)}",
            DICTIONARY_LEARNING_CONFIG_FILENAME,
        )
    state = state_dict_load(directory / DICTIONARY_LEARNING_WEIGHTS_FILENAME)
    return _sae_lens_config(trainer, layout, state), _tensors_renamed(state, layout, str(dict_class))


def _trainer_config(path: Path) -> dict[str, Any]:
    name = DICTIONARY_LEARNING_CONFIG_FILENAME
    if not path.is_file():
        raise SaeFormatError(f"{name} is missing; a dictionary_learning trainer folder holds it beside ae.pt", name)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SaeFormatError(f"{name} is not valid JSON: {error}", name) from error
    trainer = config.get("trainer") if isinstance(config, dict) else None
    if not isinstance(trainer, dict):
        raise SaeFormatError(f'{name} has no "trainer" object; is it the config.json of a trainer folder?', name)
    return trainer


def state_dict_load(path: Path) -> dict[str, Tensor]:
    """ae.pt's tensors, unpickled with weights_only=True so that nothing in the file can run."""
    name = path.name
    if not path.is_file():
        raise SaeFormatError(f"{name} is missing", name)
    try:
        # mmap: tensors stay on disk until used, so a large file is not read into memory whole; only
        # torch.save's zip format (the default since torch 1.6) allows it.
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        raise SaeFormatError(
            f"{name} was refused: it is not a plain state dict of tensors and loading it would run code "
            f"({str(error).splitlines()[0]})",
            name,
        ) from error
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as error:
        raise SaeFormatError(f"{name} is not a readable PyTorch state dict ({error}); is it complete?", name) from error
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SaeFormatError(f"{name} must hold a state dict (tensor names to tensors)", name)
    return state


def _tensors_renamed(state: dict[str, Tensor], layout: DictClassLayout, dict_class: str) -> dict[str, Tensor]:
    theirs = {source: name for name, (source, _) in layout.tensors.items()}
    expected = [*theirs, *(n for n in (layout.k_from, layout.scalar_threshold_from, *layout.ignored) if n)]
    unexpected = [name for name in state if name not in expected]
    missing = [name for name in expected if name not in state]
    if unexpected or missing:
        problem = f"tensor {', '.join(unexpected)} is not expected" if unexpected else "it lacks " + ", ".join(missing)
        raise SaeFormatError(
            f"ae.pt does not hold a {dict_class}: {problem}; expected {', '.join(expected)}",
            DICTIONARY_LEARNING_WEIGHTS_FILENAME,
        )
    tensors = {name: convert(state[source]) for name, (source, convert) in layout.tensors.items()}
    if layout.scalar_threshold_from is not None:
        threshold = state[layout.scalar_threshold_from]
        d_sae = tensors["W_dec"].shape[0]
        tensors["threshold"] = threshold.reshape(()).expand(d_sae).clone() if threshold.numel() == 1 else threshold
    return tensors


def _sae_lens_config(trainer: dict[str, Any], layout: DictClassLayout, state: dict[str, Tensor]) -> dict[str, Any]:
    hook_name = _hook_name(trainer)
    raw: dict[str, Any] = {
        "architecture": layout.architecture,
        "d_in": trainer.get("activation_dim"),
        "d_sae": trainer.get("dict_size"),
        "dtype": "float32",
        "apply_b_dec_to_input": layout.apply_b_dec_to_input,
        "normalize_activations": "none",  # dictionary_learning scales its biases back after training
        "metadata": {
            "hook_name": hook_name,
            "model_name": trainer.get("lm_name"),
            "source_format": "dictionary_learning",
            "dict_class": trainer.get("dict_class"),
        },
        **layout.extra_cfg,
    }
    if layout.k_from is not None:
        k_buffer = state.get(layout.k_from)
        raw["k"] = int(k_buffer.item()) if k_buffer is not None and k_buffer.numel() == 1 else trainer.get("k")
    return raw


def _hook_name(trainer: dict[str, Any]) -> str | None:
    match = _SUBMODULE.match(str(trainer.get("submodule_name", "")))
    if match is None:
        return None  # the uploader names the hook on the form
    return f"blocks.{match.group(2)}.{_HOOK_OF_SUBMODULE[match.group(1)]}"
