"""dictionary_learning trainer folders (config.json + ae.pt) read without torch and renamed to SAELens's conventions.

ae.pt is a pickle, and loading a pickle may run any code, so it is never unpickled: torch_checkpoint parses it
as a state dict of tensors and refuses anything else. A file that tries to run code is refused, never executed.
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.compute.file_tensors import FileTensor
from workers.compute.sae_errors import SaeFormatError
from workers.compute.torch_checkpoint import (
    RESAVE_ADVICE,
    CheckpointNotStateDictError,
    CheckpointRefusedError,
    CheckpointUnreadableError,
    torch_state_dict_read,
)

# dictionary_learning names submodules after nnsight's paths; these are the ones TransformerLens has a hook for.
_SUBMODULE = re.compile(r"^(resid_post|mlp_out|attn_out)_layer_(\d+)$")
_HOOK_OF_SUBMODULE = {"resid_post": "hook_resid_post", "mlp_out": "hook_mlp_out", "attn_out": "hook_attn_out"}


@dataclass(frozen=True)
class Stored:
    """Where a SAELens tensor is in a dictionary_learning state dict; nn.Linear weights are stored transposed."""

    name: str
    transposed: bool = False


@dataclass(frozen=True)
class DictClassLayout:
    """How one dictionary_learning class stores an SAE: SAELens name -> its state-dict entry."""

    architecture: str
    tensors: dict[str, Stored]
    apply_b_dec_to_input: bool = True
    ignored: tuple[str, ...] = ()  # buffers its inference encode does not use
    k_from: str | None = None  # state-dict buffer holding topk's k
    scalar_threshold_from: str | None = None  # a single threshold shared by every feature
    extra_cfg: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DictionaryLearningSae:
    """A trainer folder in SAELens's terms: a SAELens-style config and SAELens-named views into ae.pt."""

    config: dict[str, Any]  # the raw config, stored with the SAE as cfg.json's contents would be
    tensors: dict[str, FileTensor]


_LINEAR = {
    "W_enc": Stored("encoder.weight", transposed=True),
    "b_enc": Stored("encoder.bias"),
    "W_dec": Stored("decoder.weight", transposed=True),
}
_TOPK = {**_LINEAR, "b_dec": Stored("b_dec")}

DICT_CLASSES: dict[str, DictClassLayout] = {
    "AutoEncoder": DictClassLayout("standard", {**_LINEAR, "b_dec": Stored("bias")}),
    # Its inference encode keeps the k largest ReLU'd pre-activations; the threshold is for training stats.
    "AutoEncoderTopK": DictClassLayout("topk", _TOPK, ignored=("threshold",), k_from="k"),
    # At inference BatchTopK keeps every ReLU'd pre-activation above one learned threshold: a JumpReLU.
    "BatchTopKSAE": DictClassLayout("jumprelu", _TOPK, ignored=("k",), scalar_threshold_from="threshold"),
    # It encodes x, not x - b_dec.
    "JumpReluAutoEncoder": DictClassLayout(
        "jumprelu",
        {name: Stored(name) for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold")},
        apply_b_dec_to_input=False,
    ),
    "GatedAutoEncoder": DictClassLayout(
        "gated",
        {
            "W_enc": Stored("encoder.weight", transposed=True),
            "W_dec": Stored("decoder.weight", transposed=True),
            "b_dec": Stored("decoder_bias"),
            "b_gate": Stored("gate_bias"),
            "b_mag": Stored("mag_bias"),
            "r_mag": Stored("r_mag"),
        },
    ),
}


def dictionary_learning_read(config_path: Path, weights_path: Path) -> DictionaryLearningSae:
    """The trainer folder's config.json and ae.pt in SAELens's terms; no tensor value is read but topk's k."""
    trainer = _trainer_config(config_path, weights_path.name)
    dict_class = trainer.get("dict_class")
    layout = DICT_CLASSES.get(str(dict_class))
    if layout is None:
        raise SaeFormatError(
            f"dict_class {dict_class!r} is not supported; supported: {', '.join(DICT_CLASSES)}", config_path.name
        )
    state = state_dict_read(weights_path)
    tensors = _tensors_renamed(state, layout, str(dict_class), weights_path.name)
    return DictionaryLearningSae(config=_sae_lens_config(trainer, layout, state), tensors=tensors)


def _trainer_config(path: Path, weights_name: str) -> dict[str, Any]:
    name = path.name
    if not path.is_file():
        raise SaeFormatError(
            f"{name} is missing; a dictionary_learning trainer folder holds it beside {weights_name}", name
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SaeFormatError(f"{name} is not valid JSON: {error}", name) from error
    trainer = config.get("trainer") if isinstance(config, dict) else None
    if not isinstance(trainer, dict):
        raise SaeFormatError(f'{name} has no "trainer" object; is it the config.json of a trainer folder?', name)
    return trainer


def state_dict_read(path: Path) -> dict[str, FileTensor]:
    """ae.pt's tensors by state-dict name, parsed without unpickling, so nothing in the file can run."""
    name = path.name
    if not path.is_file():
        raise SaeFormatError(f"{name} is missing", name)
    try:
        return torch_state_dict_read(path)
    except CheckpointRefusedError as error:
        raise SaeFormatError(
            f"{name} was refused: it is not a plain state dict of tensors and loading it would run code ({error}); "
            f"{RESAVE_ADVICE}",
            name,
        ) from error
    except CheckpointNotStateDictError as error:
        raise SaeFormatError(
            f"{name} must hold a state dict (tensor names to tensors): {error}; {RESAVE_ADVICE}", name
        ) from error
    except (CheckpointUnreadableError, OSError) as error:
        raise SaeFormatError(f"{name} is not a readable PyTorch state dict ({error}); is it complete?", name) from error


def _tensors_renamed(
    state: dict[str, FileTensor], layout: DictClassLayout, dict_class: str, weights_name: str
) -> dict[str, FileTensor]:
    theirs = [stored.name for stored in layout.tensors.values()]
    expected = [*theirs, *(n for n in (layout.k_from, layout.scalar_threshold_from, *layout.ignored) if n)]
    unexpected = [name for name in state if name not in expected]
    missing = [name for name in expected if name not in state]
    if unexpected or missing:
        problem = f"tensor {', '.join(unexpected)} is not expected" if unexpected else "it lacks " + ", ".join(missing)
        raise SaeFormatError(
            f"{weights_name} does not hold a {dict_class}: {problem}; expected {', '.join(expected)}", weights_name
        )
    tensors = {
        name: state[stored.name].transposed() if stored.transposed else state[stored.name]
        for name, stored in layout.tensors.items()
    }
    if layout.scalar_threshold_from is not None:
        threshold = state[layout.scalar_threshold_from]
        d_sae = tensors["W_dec"].shape[0] if tensors["W_dec"].shape else 1
        tensors["threshold"] = threshold.expanded(d_sae) if threshold.numel == 1 else threshold
    return tensors


def _sae_lens_config(trainer: dict[str, Any], layout: DictClassLayout, state: dict[str, FileTensor]) -> dict[str, Any]:
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
        raw["k"] = _k_buffer_value(state.get(layout.k_from), trainer.get("k"))
    return raw


def _k_buffer_value(buffer: FileTensor | None, trainer_k: object) -> object:
    """topk's k from its state-dict buffer, the one value read here; the trainer's setting when there is none."""
    if buffer is None or buffer.numel != 1 or not buffer.dtype.startswith(("I", "U")):
        return trainer_k
    return int(buffer.array().reshape(-1)[0])


def _hook_name(trainer: dict[str, Any]) -> str | None:
    match = _SUBMODULE.match(str(trainer.get("submodule_name", "")))
    if match is None:
        return None  # the uploader names the hook on the form
    return f"blocks.{match.group(2)}.{_HOOK_OF_SUBMODULE[match.group(1)]}"
