"""dictionary_learning trainer folders: encode and decode match the library's own; ae.pt never runs code.

Each broken folder is refused alike by the upload's torch-free check (sae_files_check) and by the worker's
loader (sae_load), except bad values, which only the upload scans for.
"""

import builtins
import json
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from tests import factories
from workers.compute.sae import sae_load
from workers.compute.sae_files import (
    DICTIONARY_LEARNING_CONFIG_FILENAME,
    DICTIONARY_LEARNING_WEIGHTS_FILENAME,
    SaeFormatError,
    sae_files_check,
)

AE_PT, CONFIG_JSON = DICTIONARY_LEARNING_WEIGHTS_FILENAME, DICTIONARY_LEARNING_CONFIG_FILENAME
D_IN = 8
D_SAE = 32
DICT_CLASSES = {
    "AutoEncoder": "standard",
    "AutoEncoderTopK": "topk",
    "BatchTopKSAE": "jumprelu",
    "JumpReluAutoEncoder": "jumprelu",
    "GatedAutoEncoder": "gated",
}


def check_error(directory: Path) -> SaeFormatError:
    """The upload check's error."""
    with pytest.raises(SaeFormatError) as raised:
        sae_files_check(directory)
    return raised.value


def load_error(directory: Path) -> SaeFormatError:
    """The error of both the upload check and the worker's loader, which must agree."""
    with pytest.raises(SaeFormatError) as raised:
        sae_load(directory)
    checked = check_error(directory)
    assert (str(checked), checked.filename) == (str(raised.value), raised.value.filename)
    return raised.value


@pytest.mark.parametrize("dict_class", DICT_CLASSES)
def test_encode_and_decode_match_dictionary_learning(tmp_path: Path, dict_class: str) -> None:
    reference = factories.dictionary_learning_make(dict_class, d_in=D_IN, d_sae=D_SAE)
    ours = sae_load(factories.dictionary_learning_write(tmp_path, reference, dict_class=dict_class))
    x = torch.randn(3, 7, D_IN, generator=torch.Generator().manual_seed(2)) * 2
    with torch.no_grad():
        expected = reference.encode(x.reshape(-1, D_IN)).reshape(3, 7, D_SAE)
        expected_out = reference.decode(expected)
    assert ours.config.architecture == DICT_CLASSES[dict_class]
    assert ours.config.hook_name == "blocks.0.hook_resid_post"
    assert (expected > 0).any() and (expected == 0).any()
    torch.testing.assert_close(ours.encode(x), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.decode(expected), expected_out, atol=1e-5, rtol=1e-5)


def test_check_returns_the_config_in_sae_lens_terms(tmp_path: Path) -> None:
    reference = factories.dictionary_learning_make("AutoEncoderTopK", d_in=D_IN, d_sae=D_SAE, k=3)
    config = sae_files_check(factories.dictionary_learning_write(tmp_path, reference, dict_class="AutoEncoderTopK",
                                                           submodule_name="mlp_out_layer_2"))
    assert (config.architecture, config.k, config.d_in, config.d_sae) == ("topk", 3, D_IN, D_SAE)
    assert config.hook_name == "blocks.2.hook_mlp_out"
    assert config.raw["metadata"]["dict_class"] == "AutoEncoderTopK"


class RunsCode:
    """A pickle that calls builtins.exec when unpickled, as a malicious ae.pt would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return builtins.exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_a_pickle_that_would_run_code_is_refused_not_run(tmp_path: Path) -> None:
    directory = factories.dictionary_learning_write(
        tmp_path / "sae", factories.dictionary_learning_make("AutoEncoder", d_in=D_IN, d_sae=D_SAE),
        dict_class="AutoEncoder",
    )
    marker = tmp_path / "pwned"
    torch.save({"encoder.weight": torch.zeros(D_SAE, D_IN), "payload": RunsCode(marker)}, directory / AE_PT)
    error = load_error(directory)
    assert "ae.pt was refused" in str(error) and "would run code" in str(error)
    assert error.filename == "ae.pt"
    assert not marker.exists()
    assert ".exec)" in str(error)  # the global it would have called is named
    assert "weights_only" not in str(error)  # PyTorch's advice to turn the safety off is not passed on
    assert not marker.exists()


def test_a_raw_pickle_that_would_run_code_is_refused_not_run(tmp_path: Path) -> None:
    directory = factories.dictionary_learning_write(
        tmp_path / "sae", factories.dictionary_learning_make("AutoEncoder", d_in=D_IN, d_sae=D_SAE),
        dict_class="AutoEncoder",
    )
    marker = tmp_path / "pwned"
    (directory / AE_PT).write_bytes(pickle.dumps(RunsCode(marker)))  # not a zip
    assert "would run code" in str(load_error(directory))
    assert not marker.exists()


def test_a_whole_pickled_module_is_refused(tmp_path: Path) -> None:
    reference = factories.dictionary_learning_make("AutoEncoder", d_in=D_IN, d_sae=D_SAE)
    directory = factories.dictionary_learning_write(tmp_path, reference, dict_class="AutoEncoder")
    torch.save(reference, directory / AE_PT)
    assert "ae.pt was refused" in str(load_error(directory))


def test_truncated_ae_pt_is_named(tmp_path: Path) -> None:
    reference = factories.dictionary_learning_make("AutoEncoder", d_in=D_IN, d_sae=D_SAE)
    directory = factories.dictionary_learning_write(tmp_path, reference, dict_class="AutoEncoder")
    weights = directory / AE_PT
    weights.write_bytes(weights.read_bytes()[:300])
    assert "ae.pt is not a readable PyTorch state dict" in str(load_error(directory))


def test_misnamed_state_dict_entries_are_named(tmp_path: Path) -> None:
    reference = factories.dictionary_learning_make("GatedAutoEncoder", d_in=D_IN, d_sae=D_SAE)
    directory = factories.dictionary_learning_write(tmp_path, reference, dict_class="GatedAutoEncoder")
    state = torch.load(directory / AE_PT, weights_only=True)
    state["gate_b"] = state.pop("gate_bias")
    torch.save(state, directory / AE_PT)
    message = str(load_error(directory))
    assert message.startswith("ae.pt does not hold a GatedAutoEncoder: tensor gate_b is not expected; expected")


def test_shapes_that_disagree_with_config_json_are_named(tmp_path: Path) -> None:
    reference = factories.dictionary_learning_make("AutoEncoder", d_in=D_IN, d_sae=D_SAE)
    directory = factories.dictionary_learning_write(tmp_path, reference, dict_class="AutoEncoder")
    config = json.loads((directory / CONFIG_JSON).read_text())
    config["trainer"]["activation_dim"] = 16
    (directory / CONFIG_JSON).write_text(json.dumps(config))
    assert str(load_error(directory)) == f"W_enc is [{D_IN}, {D_SAE}] but config.json says d_in=16"


def test_nan_weights_are_named(tmp_path: Path) -> None:
    reference = factories.dictionary_learning_make("JumpReluAutoEncoder", d_in=D_IN, d_sae=D_SAE)
    with torch.no_grad():
        reference.threshold[3] = float("nan")
    directory = factories.dictionary_learning_write(tmp_path, reference, dict_class="JumpReluAutoEncoder")
    assert str(check_error(directory)) == "tensor threshold has 1 NaN or infinite values"


def test_unknown_dict_class_lists_the_supported_ones(tmp_path: Path) -> None:
    reference = factories.dictionary_learning_make("AutoEncoder", d_in=D_IN, d_sae=D_SAE)
    directory = factories.dictionary_learning_write(tmp_path, reference, dict_class="MatryoshkaBatchTopKSAE")
    error = load_error(directory)
    assert str(error).startswith("dict_class 'MatryoshkaBatchTopKSAE' is not supported; supported: AutoEncoder,")
    assert error.filename == "config.json"
