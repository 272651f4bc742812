"""The model and SAE a worker computes with, on its device: one model stays loaded per worker process."""

import torch
from django.conf import settings
from transformer_lens import HookedTransformer

from atlas.lms.models import LanguageModel
from atlas.lms.selectors import language_model_source
from atlas.saes.models import Sae
from workers.compute.language_model import load_language_model
from workers.compute.sae import SparseAutoencoder, sae_load

# Loading a model takes seconds and a worker's next shard is most likely the same run's: keep the last one.
_loaded: dict[tuple[int, str, torch.dtype], HookedTransformer] = {}


def worker_device() -> str:
    """settings.ATLAS_DEVICE, or where it is empty CUDA when this worker has it, else the CPU."""
    return settings.ATLAS_DEVICE or ("cuda" if torch.cuda.is_available() else "cpu")


def worker_dtype(device: str) -> torch.dtype:
    """bf16 (or ATLAS_CUDA_DTYPE) on CUDA, where it is several times faster; float32 on the CPU."""
    dtype: torch.dtype = getattr(torch, settings.ATLAS_CUDA_DTYPE) if device.startswith("cuda") else torch.float32
    return dtype


def language_model_loaded(language_model: LanguageModel, device: str) -> HookedTransformer:
    key = (language_model.pk, device, worker_dtype(device))
    if key not in _loaded:
        _loaded.clear()  # one model at a time: two would not fit on most GPUs
        _loaded[key] = load_language_model(language_model_source(language_model), device=device, dtype=key[2])
    return _loaded[key]


def sae_loaded(sae: Sae, device: str) -> SparseAutoencoder:
    # Not cached: on the CPU the tensors stay memory-mapped from the file, which may be replaced meanwhile.
    return sae_load(sae.files_path, device=device, dtype=worker_dtype(device))
