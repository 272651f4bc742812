"""Factories for tests: a tiny real model, datasets, SAEs written by sae_lens itself, users."""

import importlib
import importlib.util
import json
import sys
import tempfile
import types
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.files.uploadedfile import SimpleUploadedFile

from atlas.datasets.models import Dataset
from atlas.datasets.services import dataset_create
from atlas.lms.models import LanguageModel
from atlas.lms.services import language_model_store
from workers.compute.corpus import stdlib_docstrings
from workers.compute.language_model import ModelFacts, ModelSource, load_language_model, model_facts
from workers.compute.tiny_model import tiny_model_write

TINY_HOOK = "blocks.0.hook_resid_post"
PASSWORD = "correct horse battery staple"


@lru_cache(maxsize=1)
def tiny_model_dir() -> Path:
    """A tiny Llama with a tokenizer trained on stdlib docstrings, written once per test session."""
    return tiny_model_write(Path(tempfile.mkdtemp(prefix="atlas-tiny-")) / "tiny-llama", stdlib_docstrings(60_000))


@lru_cache(maxsize=1)
def tiny_model_facts() -> ModelFacts:
    return model_facts(load_language_model(ModelSource(kind="hf_local", name_or_path=str(tiny_model_dir()))))


def language_model_make(slug: str = "tiny-llama") -> LanguageModel:
    """The tiny model's record, stored the way language_model_register stores it, from facts read once."""
    source = ModelSource(kind="hf_local", name_or_path=str(tiny_model_dir()))
    return language_model_store(slug=slug, display_name="Tiny Llama", source=source, facts=tiny_model_facts())


def dataset_make(language_model: LanguageModel, slug: str = "docstrings", n_sequences: int = 12,
                 context_length: int = 48) -> Dataset:
    return dataset_create(
        slug=slug,
        language_model=language_model,
        documents=stdlib_docstrings(80_000),
        source_kind=Dataset.SourceKind.PATH,
        source="stdlib docstrings",
        context_length=context_length,
        max_sequences=n_sequences,
    )


def user_make(username: str = "alice") -> AbstractUser:
    user: AbstractUser = get_user_model().objects.create_user(username=username, password=PASSWORD)
    return user


def sae_lens_write(directory: Path, *, d_in: int, d_sae: int = 48, hook_name: str = TINY_HOOK,
                   architecture: str = "standard", seed: int = 0, **cfg: Any) -> Path:
    """An SAE saved by sae_lens's own save_model, with biases set so features fire on some tokens."""
    from sae_lens import SAE

    sae = SAE.from_dict({
        "architecture": architecture, "d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": "cpu",
        "metadata": {"hook_name": hook_name, "model_name": "tiny-llama"}, **cfg,
    })
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sae.W_enc.copy_(torch.randn(d_in, d_sae, generator=generator) / d_in**0.5)
        sae.W_dec.copy_(torch.randn(d_sae, d_in, generator=generator) / d_in**0.5)
        biases = sae.b_gate if architecture == "gated" else sae.b_enc
        biases.copy_(torch.linspace(-2.5, 0.0, d_sae))
        if architecture == "gated":
            sae.b_mag.zero_()
            sae.r_mag.zero_()
        if architecture == "jumprelu":
            sae.threshold.fill_(0.05)
        sae.b_dec.zero_()
    directory.mkdir(parents=True, exist_ok=True)
    sae.save_model(str(directory))
    return directory


@lru_cache(maxsize=1)
def dictionary_learning_classes() -> dict[str, Any]:
    """dictionary_learning's SAE classes, imported without its package __init__, which needs nnsight (training only)."""
    spec = importlib.util.find_spec("dictionary_learning")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps dictionary-learning"
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, path in (("dictionary_learning", root), ("dictionary_learning.trainers", root / "trainers")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    dictionary = importlib.import_module("dictionary_learning.dictionary")
    top_k = importlib.import_module("dictionary_learning.trainers.top_k")
    batch_top_k = importlib.import_module("dictionary_learning.trainers.batch_top_k")
    return {
        "AutoEncoder": dictionary.AutoEncoder,
        "AutoEncoderTopK": top_k.AutoEncoderTopK,
        "BatchTopKSAE": batch_top_k.BatchTopKSAE,
        "JumpReluAutoEncoder": dictionary.JumpReluAutoEncoder,
        "GatedAutoEncoder": dictionary.GatedAutoEncoder,
    }


def dictionary_learning_make(dict_class: str, *, d_in: int, d_sae: int, k: int = 5, seed: int = 0) -> Any:
    """A dictionary_learning SAE with random weights, biased so that some features fire and some do not."""
    cls = dictionary_learning_classes()[dict_class]
    sae = cls(d_in, d_sae, k) if dict_class in ("AutoEncoderTopK", "BatchTopKSAE") else cls(d_in, d_sae)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) / d_in**0.25)
        if dict_class == "JumpReluAutoEncoder":
            sae.threshold.copy_(torch.rand(d_sae, generator=generator))
        if dict_class == "BatchTopKSAE":
            sae.threshold.fill_(0.3)
    return sae


def dictionary_learning_write(directory: Path, sae: Any, *, dict_class: str,
                              submodule_name: str = "resid_post_layer_0") -> Path:
    """A trainer folder as dictionary_learning's trainSAE writes it: ae.pt (a state dict) and config.json."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({name: tensor.cpu() for name, tensor in sae.state_dict().items()}, directory / "ae.pt")
    trainer = {
        "dict_class": dict_class, "trainer_class": "Trainer", "activation_dim": sae.activation_dim,
        "dict_size": sae.dict_size, "lr": 1e-4, "layer": 0, "lm_name": "tiny-llama", "submodule_name": submodule_name,
    }
    if hasattr(sae, "k"):
        trainer["k"] = int(sae.k)
    (directory / "config.json").write_text(json.dumps({"trainer": trainer, "buffer": {"ctx_len": 48}}, indent=4))
    return directory


def sae_upload_files(directory: Path) -> dict[str, SimpleUploadedFile]:
    return {
        "cfg_file": SimpleUploadedFile("cfg.json", (directory / "cfg.json").read_bytes()),
        "weights_file": SimpleUploadedFile(
            "sae_weights.safetensors", (directory / "sae_weights.safetensors").read_bytes()
        ),
    }


def upload_form_data(language_model: LanguageModel, dataset: Dataset, **overrides: Any) -> dict[str, Any]:
    return {
        "language_model": language_model.slug,
        "dataset": dataset.slug,
        "top_k": 5,
        "context_before": 6,
        "context_after": 2,
        **overrides,
    }
