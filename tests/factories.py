"""Factories for tests: a tiny real model, datasets, SAEs written by sae_lens itself, users."""

import tempfile
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
        sae.b_enc.copy_(torch.linspace(-2.5, 0.0, d_sae))
        sae.b_dec.zero_()
    directory.mkdir(parents=True, exist_ok=True)
    sae.save_model(str(directory))
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
