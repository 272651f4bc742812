"""Encode and decode match SAELens's own, within 1e-5, for every architecture, normalization and config vintage."""

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from sae_lens import SAE
from safetensors.torch import save_file

from workers.compute.sae import SparseAutoencoder, sae_load

D_IN = 8
D_SAE = 32
N_HEADS, D_HEAD = 2, 4  # hook_z: D_IN = N_HEADS * D_HEAD
ARCHITECTURES: list[tuple[str, dict[str, Any]]] = [
    ("standard", {}),
    ("standard", {"apply_b_dec_to_input": False}),
    ("jumprelu", {}),
    ("topk", {"k": 5}),
    ("topk", {"k": 5, "rescale_acts_by_decoder_norm": True}),
    ("gated", {}),
]
ARCHITECTURE_IDS = ["standard", "standard-no-b_dec-in", "jumprelu", "topk", "topk-rescaled", "gated"]


def sae_lens_make(architecture: str, extra: dict[str, Any]) -> Any:
    """A SAELens SAE with random weights, biased so that some features fire and some do not."""
    cfg = {"architecture": architecture, "d_in": D_IN, "d_sae": D_SAE, "dtype": "float32", "device": "cpu", **extra}
    sae = SAE.from_dict(cfg)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
        if architecture == "jumprelu":
            sae.threshold.copy_(torch.rand(D_SAE, generator=generator) * 2)
    return sae


def inputs(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(2)) * 3 + 0.5


def assert_matches(reference: Any, ours: SparseAutoencoder, x: torch.Tensor) -> None:
    """Our encode and decode of x against the reference's (decoding right after encoding, as its state needs)."""
    with torch.no_grad():
        expected_acts = reference.encode(x)
        expected_out = reference.decode(expected_acts)
    acts = ours.encode(x)
    assert (expected_acts > 0).any() and (expected_acts == 0).any()
    torch.testing.assert_close(acts, expected_acts, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.decode(expected_acts, source=x), expected_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.reconstruct(x), expected_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("architecture", "extra"), ARCHITECTURES, ids=ARCHITECTURE_IDS)
@pytest.mark.parametrize("normalization", ["none", "constant_norm_rescale", "layer_norm"])
def test_encode_and_decode_match_sae_lens(
    tmp_path: Path, architecture: str, extra: dict[str, Any], normalization: str
) -> None:
    reference = sae_lens_make(architecture, {**extra, "normalize_activations": normalization})
    reference.save_model(tmp_path)
    ours = sae_load(tmp_path)
    assert ours.config.architecture == architecture
    assert_matches(reference, ours, inputs(3, 7, D_IN))


@pytest.mark.parametrize(("architecture", "extra"), ARCHITECTURES, ids=ARCHITECTURE_IDS)
def test_feature_slices_encode_like_the_whole(tmp_path: Path, architecture: str, extra: dict[str, Any]) -> None:
    sae_lens_make(architecture, {**extra, "normalize_activations": "layer_norm"}).save_model(tmp_path)
    ours = sae_load(tmp_path)
    x = inputs(5, D_IN)
    whole = ours.encode(x)
    torch.testing.assert_close(torch.cat([ours.encode_features(x, 0, 10), ours.encode_features(x, 10, D_SAE)], -1),
                               whole, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("architecture", "extra"), ARCHITECTURES, ids=ARCHITECTURE_IDS)
def test_expected_average_scaling_is_folded_as_sae_lens_folds_it(
    tmp_path: Path, architecture: str, extra: dict[str, Any]
) -> None:
    reference = sae_lens_make(architecture, {**extra, "normalize_activations": "expected_average_only_in"})
    reference.save_model(tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    (tmp_path / "cfg.json").write_text(json.dumps({**cfg, "norm_scaling_factor": 2.5}))
    reference.fold_activation_norm_scaling_factor(2.5)  # what SAE.from_pretrained does with a release's factor
    assert_matches(reference, sae_load(tmp_path), inputs(3, 7, D_IN))


@pytest.mark.parametrize(("architecture", "extra"), ARCHITECTURES, ids=ARCHITECTURE_IDS)
def test_hook_z_heads_are_flattened_and_restored(tmp_path: Path, architecture: str, extra: dict[str, Any]) -> None:
    reference = sae_lens_make(
        architecture, {**extra, "reshape_activations": "hook_z", "metadata": {"hook_name": "blocks.0.attn.hook_z"}}
    )
    reference.save_model(tmp_path)
    ours = sae_load(tmp_path)
    x = inputs(3, 7, N_HEADS, D_HEAD)
    assert ours.reconstruct(x).shape == x.shape
    assert_matches(reference, ours, x)
    torch.testing.assert_close(ours.encode(x), ours.encode(x.flatten(-2)))


def pre_6_directory(directory: Path, cfg: dict[str, Any], d_sae: int = D_SAE) -> Path:
    """An SAE as SAELens 3-5 saved it: hook_point, activation_fn_str, no architecture, no version."""
    generator = torch.Generator().manual_seed(3)
    tensors = {
        "W_enc": torch.randn(D_IN, d_sae, generator=generator),
        "W_dec": torch.randn(d_sae, D_IN, generator=generator),
        "b_enc": torch.randn(d_sae, generator=generator),
        "b_dec": torch.randn(D_IN, generator=generator),
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / "sae_weights.safetensors")
    base = {"d_in": D_IN, "d_sae": d_sae, "dtype": "float32", "device": "cpu", "model_name": "gpt2",
            "hook_layer": 0, "context_size": 128, "normalize_activations": False, "apply_b_dec_to_input": True}
    (directory / "cfg.json").write_text(json.dumps({**base, **cfg}))
    return directory


@pytest.mark.parametrize(
    "cfg",
    [
        {"hook_point": "blocks.0.hook_resid_pre", "activation_fn_str": "relu"},
        {"hook_point": "blocks.0.hook_resid_pre", "activation_fn_str": "topk", "activation_fn_kwargs": {"k": 4}},
        {"hook_point": "blocks.0.attn.hook_z", "activation_fn_str": "relu", "apply_b_dec_to_input": False},
        {"hook_point": "blocks.0.hook_resid_pre", "activation_fn_str": "relu", "normalize_activations": "layer_norm"},
    ],
    ids=["relu", "topk", "hook_z", "layer_norm"],
)
def test_pre_6_configs_load_as_sae_lens_loads_them(tmp_path: Path, cfg: dict[str, Any]) -> None:
    directory = pre_6_directory(tmp_path, cfg)
    reference = SAE.load_from_disk(directory)
    ours = sae_load(directory)
    assert ours.config.hook_name == cfg["hook_point"]
    assert ours.config.architecture == reference.cfg.architecture()
    assert ours.config.reshape_activations == reference.cfg.reshape_activations
    x = inputs(3, 7, N_HEADS, D_HEAD) if "hook_z" in cfg["hook_point"] else inputs(3, 7, D_IN)
    assert_matches(reference, ours, x)
