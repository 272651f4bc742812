"""SAELens-format SAEs: every broken file is refused with a message naming the problem (encode: test_sae_reference).

Each file is refused alike by the upload's torch-free check (sae_files_check) and by the worker's loader
(sae_load), except bad values, which only the upload scans for.
"""

import json
import struct
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from workers.compute.sae import sae_load
from workers.compute.sae_files import (
    CFG_FILENAME,
    WEIGHTS_FILENAME,
    SaeFormatError,
    sae_config_parse,
    sae_files_check,
    sae_weights_check,
)

D_IN = 8
D_SAE = 32


def cfg_make(**overrides: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architecture": "standard",
        "d_in": D_IN,
        "d_sae": D_SAE,
        "dtype": "float32",
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "metadata": {"hook_name": "blocks.0.hook_resid_post"},
    }
    return {**cfg, **overrides}


def tensors_make(d_in: int = D_IN, d_sae: int = D_SAE) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "W_enc": torch.randn(d_in, d_sae, generator=generator),
        "W_dec": torch.randn(d_sae, d_in, generator=generator),
        "b_enc": torch.randn(d_sae, generator=generator),
        "b_dec": torch.randn(d_in, generator=generator),
    }


def sae_dir_make(directory: Path, tensors: dict[str, torch.Tensor], cfg: dict[str, Any] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / WEIGHTS_FILENAME)
    (directory / CFG_FILENAME).write_text(json.dumps(cfg or cfg_make()))
    return directory


def check_error(directory: Path) -> str:
    """The upload check's message."""
    with pytest.raises(SaeFormatError) as raised:
        sae_files_check(directory)
    return str(raised.value)


def load_error(directory: Path) -> str:
    """The message of both the upload check and the worker's loader, which must agree."""
    with pytest.raises(SaeFormatError) as raised:
        sae_load(directory)
    assert check_error(directory) == str(raised.value)
    return str(raised.value)


def config_error(text: str) -> str:
    with pytest.raises(SaeFormatError) as raised:
        sae_config_parse(text)
    return str(raised.value)


def test_a_valid_sae_loads(tmp_path: Path) -> None:
    sae = sae_load(sae_dir_make(tmp_path, tensors_make()))
    assert (sae.d_in, sae.d_sae) == (D_IN, D_SAE)
    assert sae.W_dec.shape == (D_SAE, D_IN)
    assert sae.config.hook_name == "blocks.0.hook_resid_post"


def test_truncated_weights_are_refused(tmp_path: Path) -> None:
    directory = sae_dir_make(tmp_path, tensors_make())
    weights = directory / WEIGHTS_FILENAME
    weights.write_bytes(weights.read_bytes()[:-500])
    message = load_error(directory)
    assert "sae_weights.safetensors is truncated" in message
    assert "bytes of tensors but the file has" in message


def test_header_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    directory = sae_dir_make(tmp_path, tensors_make())
    weights = directory / WEIGHTS_FILENAME
    weights.write_bytes(struct.pack("<Q", 5000) + b'{"W_enc": {')
    assert "truncated: its header should be 5000 bytes but the file has 19" in load_error(directory)


def test_header_offsets_beyond_the_file_are_refused(tmp_path: Path) -> None:
    header = json.dumps({"W_enc": {"dtype": "F32", "shape": [D_IN, D_SAE], "data_offsets": [0, 4 * D_IN * D_SAE]}})
    directory = sae_dir_make(tmp_path, tensors_make())
    (directory / WEIGHTS_FILENAME).write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(64))
    assert f"header describes {4 * D_IN * D_SAE} bytes of tensors but the file has 64" in load_error(directory)


def test_a_pickle_is_not_a_safetensors_file(tmp_path: Path) -> None:
    directory = sae_dir_make(tmp_path, tensors_make())
    torch.save(tensors_make(), directory / WEIGHTS_FILENAME)
    assert "sae_weights.safetensors is not a safetensors file" in load_error(directory)


def test_a_header_that_is_not_json_is_refused(tmp_path: Path) -> None:
    directory = sae_dir_make(tmp_path, tensors_make())
    (directory / WEIGHTS_FILENAME).write_bytes(struct.pack("<Q", 4) + b"oops")
    assert "is not a safetensors file: its header is not JSON" in load_error(directory)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    tensors = tensors_make()
    del tensors["b_dec"]
    assert load_error(sae_dir_make(tmp_path, tensors)) == "missing tensor b_dec for architecture standard"


def test_misnamed_tensor_is_named_with_the_expected_ones(tmp_path: Path) -> None:
    tensors = tensors_make()
    tensors["W_encoder"] = tensors.pop("W_enc")
    message = load_error(sae_dir_make(tmp_path, tensors))
    assert message.startswith(
        "tensor W_encoder is not expected for architecture standard; expected W_enc, W_dec, b_enc, b_dec"
    )


def test_jumprelu_needs_its_threshold(tmp_path: Path) -> None:
    message = load_error(sae_dir_make(tmp_path, tensors_make(), cfg_make(architecture="jumprelu")))
    assert message == "missing tensor threshold for architecture jumprelu"


def test_encoder_and_decoder_that_disagree_are_refused(tmp_path: Path) -> None:
    tensors = tensors_make()
    tensors["W_dec"] = torch.randn(D_SAE, D_IN + 1)
    message = load_error(sae_dir_make(tmp_path, tensors))
    assert message == f"W_dec is [{D_SAE}, {D_IN + 1}] but W_enc is [{D_IN}, {D_SAE}]: they disagree on d_in (9 vs 8)"


def test_shapes_must_match_cfg_d_in(tmp_path: Path) -> None:
    directory = sae_dir_make(tmp_path, tensors_make(d_in=16), cfg_make(d_in=D_IN))
    assert load_error(directory) == f"W_enc is [16, {D_SAE}] but cfg.json says d_in={D_IN}"


def test_nan_weight_is_named(tmp_path: Path) -> None:
    tensors = tensors_make()
    tensors["W_dec"][3, 2] = float("nan")
    tensors["W_dec"][4, 1] = float("inf")
    assert check_error(sae_dir_make(tmp_path, tensors)) == "tensor W_dec has 2 NaN or infinite values"


def test_the_loader_does_not_scan_values_again(tmp_path: Path) -> None:
    tensors = tensors_make()
    tensors["b_enc"][0] = float("nan")
    assert torch.isnan(sae_load(sae_dir_make(tmp_path, tensors)).b_enc[0])


def test_integer_weights_are_refused(tmp_path: Path) -> None:
    tensors = tensors_make()
    tensors["b_enc"] = torch.zeros(D_SAE, dtype=torch.int32)
    message = load_error(sae_dir_make(tmp_path, tensors))
    assert message == "tensor b_enc is stored as I32; supported dtypes: F32, F16, BF16"


def test_bf16_weights_load_as_float32(tmp_path: Path) -> None:
    tensors = {name: tensor.to(torch.bfloat16) for name, tensor in tensors_make().items()}
    sae = sae_load(sae_dir_make(tmp_path, tensors))
    assert sae.W_enc.dtype == torch.float32
    assert torch.equal(sae.W_enc, tensors["W_enc"].float())


def test_bad_json_cfg_is_refused(tmp_path: Path) -> None:
    directory = sae_dir_make(tmp_path, tensors_make())
    (directory / CFG_FILENAME).write_text("{not json")
    message = load_error(directory)
    assert message == "cfg.json is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2"


def test_empty_cfg_is_refused() -> None:
    assert config_error("") == "cfg.json is not valid JSON: Expecting value at line 1 column 1"


def test_unknown_architecture_lists_the_supported_ones() -> None:
    message = config_error(json.dumps(cfg_make(architecture="matching_pursuit")))
    assert message == (
        "architecture 'matching_pursuit' is not supported; supported architectures: standard, jumprelu, topk, gated"
    )


def test_unknown_activation_normalization_is_refused() -> None:
    message = config_error(json.dumps(cfg_make(normalize_activations="covariance_whitening")))
    assert message.startswith("normalize_activations 'covariance_whitening' is not supported; supported: none,")


def test_expected_average_normalization_needs_its_scaling_factor() -> None:
    message = config_error(json.dumps(cfg_make(normalize_activations="expected_average_only_in")))
    assert 'add it to cfg.json as "norm_scaling_factor"' in message


def test_unknown_reshape_is_refused() -> None:
    message = config_error(json.dumps(cfg_make(reshape_activations="hook_q")))
    assert message == "reshape_activations 'hook_q' is not supported; supported: none, hook_z"


def test_cfg_without_d_sae_is_refused() -> None:
    cfg = cfg_make()
    del cfg["d_sae"]
    assert config_error(json.dumps(cfg)) == "cfg.json has no d_sae"


def test_topk_without_k_is_refused() -> None:
    message = config_error(json.dumps(cfg_make(architecture="topk")))
    assert message == "a topk SAE needs k in cfg.json between 1 and d_sae=32, got None"


def test_pre_6_topk_config_is_understood() -> None:
    cfg = {
        "d_in": D_IN,
        "d_sae": D_SAE,
        "hook_point": "blocks.3.hook_resid_pre",
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 4},
        "normalize_activations": False,
    }
    config = sae_config_parse(json.dumps(cfg))
    assert (config.architecture, config.k, config.hook_name) == ("topk", 4, "blocks.3.hook_resid_pre")
    assert config.apply_b_dec_to_input is True


def test_pre_6_top_level_hook_name_is_understood() -> None:
    cfg = {"d_in": D_IN, "d_sae": D_SAE, "hook_name": "blocks.1.hook_resid_post", "activation_fn_str": "relu"}
    config = sae_config_parse(json.dumps(cfg))
    assert (config.architecture, config.hook_name) == ("standard", "blocks.1.hook_resid_post")


def test_unsupported_activation_function_is_refused() -> None:
    message = config_error(json.dumps(cfg_make(activation_fn_str="tanh-relu")))
    assert message == "activation_fn 'tanh-relu' is not supported; supported: relu, topk"


def test_weights_check_reads_a_valid_file_without_complaint(tmp_path: Path) -> None:
    directory = sae_dir_make(tmp_path, tensors_make())
    config = sae_config_parse((directory / CFG_FILENAME).read_text())
    sae_weights_check(directory / WEIGHTS_FILENAME, config)

