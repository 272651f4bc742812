"""Factories for tests: a tiny real model, datasets, SAEs written by sae_lens itself, SAE and run records,
published results, users, and waiting for a run a worker computes."""

import importlib
import importlib.util
import json
import sys
import time
import types
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.datasets.services import dataset_create
from atlas.features.models import Feature
from atlas.features.services import run_results_publish
from atlas.lms.models import LanguageModel
from atlas.lms.services import language_model_store
from atlas.saes.models import DashboardRun, Sae
from tests.support.tiny_model import TINY_HOOK, tiny_model_dir
from workers.compute.corpus import stdlib_docstrings
from workers.compute.language_model import ModelFacts, ModelSource, load_language_model, model_facts
from workers.compute.params import DashboardParams
from workers.compute.results import Examples, FeatureDashboards

PASSWORD = "correct horse battery staple"
# A real worker computes a tiny run in seconds; minutes mean it is stuck.
RUN_TIMEOUT_SECONDS = 240
# The published feature of published_feature_make: feature 3 of an 8-feature SAE.
PUBLISHED_FEATURES, PUBLISHED_INDEX = 8, 3
# Windows of 2 + 1 + 1 tokens and two top examples, as published_feature_make's dashboards have.
SMALL_PARAMS = DashboardParams(top_k=2, context_before=2, context_after=1)


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


def staff_make(username: str = "sam") -> AbstractUser:
    user = user_make(username)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
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


def uploaded_run_computed(dataset: Dataset, directory: Path, logs: Callable[[], str]) -> DashboardRun:
    """A sae_lens_write SAE uploaded through the form by a logged-in user and its run computed by a running worker
    (logs: the worker's, shown if the run does not succeed)."""
    client = Client()
    client.force_login(user_make())
    files = sae_upload_files(sae_lens_write(directory, d_in=dataset.language_model.d_model))
    run = run_wait(sae_upload_post(client, dataset, files).runs.get(), logs=logs)
    assert run.status == DashboardRun.Status.SUCCEEDED, run.error
    return run


def sae_upload_post(client: Client, dataset: Dataset, files: dict[str, SimpleUploadedFile], **form: Any) -> Sae:
    """An SAE uploaded through the form, as a logged-in user would; its run is queued, not computed."""
    data = {**upload_form_data(dataset.language_model, dataset, **form), **files}
    response = client.post("/upload/", data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    sae: Sae = Sae.objects.latest("pk")
    return sae


def sae_make(language_model: LanguageModel, *, slug: str = "0-res-8", d_sae: int = PUBLISHED_FEATURES,
             hook_name: str = TINY_HOOK, files_dir: str = "saes/none", **fields: Any) -> Sae:
    """An SAE's record with no files: enough for results that are published rather than computed."""
    sae: Sae = Sae.objects.create(language_model=language_model, slug=slug, hook_name=hook_name, layer=0,
                                  architecture="standard", d_in=language_model.d_model, d_sae=d_sae,
                                  files_dir=files_dir, **fields)
    return sae


def run_make(sae: Sae, dataset: Dataset, *, params: DashboardParams = SMALL_PARAMS, n_sequences: int = 4,
             **fields: Any) -> DashboardRun:
    """A run's record, queued, with no shards: for results published directly."""
    run: DashboardRun = DashboardRun.objects.create(
        sae=sae, dataset=dataset, n_sequences=n_sequences, params=params.as_json(),
        tokens_total=n_sequences * dataset.context_length, **fields,
    )
    return run


def published_run_make(sae: Sae, dataset: Dataset, dashboards: FeatureDashboards, *,
                       params: DashboardParams = SMALL_PARAMS) -> DashboardRun:
    """A run of sae whose results are dashboards, published as a worker's merge publishes them."""
    run = run_make(sae, dataset, params=params)
    run_results_publish(run=run, dashboards=dashboards)
    run.refresh_from_db()
    return run


def run_wait(run: DashboardRun, *, timeout: float = RUN_TIMEOUT_SECONDS,
             logs: Callable[[], str] = lambda: "") -> DashboardRun:
    """The run once it has succeeded or failed; an AssertionError with its state and logs() if it does neither
    within timeout seconds."""
    deadline = time.monotonic() + timeout
    while not run.is_finished:
        assert time.monotonic() < deadline, (
            f"run {run.pk} is still {run.status} ({run.phase} {run.progress_done}/{run.progress_total}) "
            f"after {timeout} s:\n{logs()}"
        )
        time.sleep(0.3)
        run.refresh_from_db()
    return run


def examples_empty(n_features: int, slots: tuple[int, ...], window: int) -> Examples:
    shape = (n_features, *slots)
    return Examples(
        seq=np.full(shape, -1, dtype=np.int64),
        pos=np.zeros(shape, dtype=np.int64),
        values=np.zeros(shape, dtype=np.float32),
        window_tokens=np.full((*shape, window), -1, dtype=np.int32),
        window_values=np.full((*shape, window), np.nan, dtype=np.float32),
    )


def dashboards_empty(n_features: int, *, top_k: int = 2, n_intervals: int = 2, per_interval: int = 1,
                     window: int = 4, logit_tokens: int = 2, act_hist_bins: int = 2,
                     logit_hist_bins: int = 3, neighbours: int = 2) -> FeatureDashboards:
    """Features that never fired: every slot empty, every count zero; feature i's neighbours are the next ones."""
    following = (np.arange(n_features)[:, None] + np.arange(1, neighbours + 1)) % max(n_features, 1)
    return FeatureDashboards(
        n_tokens=192,
        frac_nonzero=np.zeros(n_features),
        max_act=np.zeros(n_features, dtype=np.float32),
        top=examples_empty(n_features, (top_k,), window),
        intervals=examples_empty(n_features, (n_intervals, per_interval), window),
        interval_counts=np.zeros((n_features, n_intervals), dtype=np.int64),
        act_hist_counts=np.zeros((n_features, act_hist_bins), dtype=np.int64),
        logit_top_ids=np.zeros((n_features, logit_tokens), dtype=np.int64),
        logit_top_values=np.zeros((n_features, logit_tokens), dtype=np.float32),
        logit_bottom_ids=np.zeros((n_features, logit_tokens), dtype=np.int64),
        logit_bottom_values=np.zeros((n_features, logit_tokens), dtype=np.float32),
        logit_hist_counts=np.zeros((n_features, logit_hist_bins), dtype=np.int64),
        logit_hist_min=np.zeros(n_features, dtype=np.float32),
        logit_hist_max=np.zeros(n_features, dtype=np.float32),
        neighbour_ids=following.astype(np.int64),
        neighbour_cosines=np.zeros((n_features, neighbours), dtype=np.float32),
    )


def published_feature_make(language_model: LanguageModel, dataset: Dataset) -> Feature:
    """Feature 3 of SAE 0-res-8, published with known numbers: one top example and one example in the lower of
    two intervals; windows of 2 + 1 + 1; neighbours 6 (cosine 0.75) and 1 (0.5)."""
    index = PUBLISHED_INDEX
    dashboards = dashboards_empty(PUBLISHED_FEATURES)
    dashboards.frac_nonzero[index], dashboards.max_act[index] = 0.25, 4.0
    dashboards.act_hist_counts[index] = [3, 1]
    dashboards.logit_top_ids[index], dashboards.logit_top_values[index] = [5, 6], [2.0, 1.0]
    dashboards.logit_bottom_ids[index], dashboards.logit_bottom_values[index] = [7, 8], [-2.0, -1.0]
    dashboards.logit_hist_counts[index] = [1, 2, 1]
    dashboards.logit_hist_min[index], dashboards.logit_hist_max[index] = -3.0, 3.0
    top, intervals = dashboards.top, dashboards.intervals
    top.seq[index, 0], top.values[index, 0] = 0, 4.0
    top.window_tokens[index, 0], top.window_values[index, 0] = [-1, 10, 11, 12], [np.nan, 0.0, 4.0, 1.0]
    intervals.seq[index, 0, 0], intervals.values[index, 0, 0] = 1, 1.5
    intervals.window_tokens[index, 0, 0] = [-1, -1, 13, 14]
    intervals.window_values[index, 0, 0] = [np.nan, np.nan, 1.5, 0.0]
    dashboards.interval_counts[index] = [3, 1]
    dashboards.neighbour_ids[index], dashboards.neighbour_cosines[index] = [6, 1], [0.75, 0.5]
    run = published_run_make(sae_make(language_model), dataset, dashboards)
    return Feature.objects.get(run=run, index=index)


def sae_uploaded(dataset: Dataset, sae_dir: Path, *, owner: AbstractUser | None, slug: str = "owned") -> Sae:
    """An SAE stored by the upload service from sae_dir's files, uploaded by owner; its run queued (its tasks are
    sent when the transaction commits)."""
    from atlas.saes.services import RunParams, sae_upload

    files = sae_upload_files(sae_dir)
    return sae_upload(language_model=dataset.language_model, dataset=dataset, uploaded_by=owner, slug=slug,
                      cfg_file=files["cfg_file"], weights_file=files["weights_file"],
                      params=RunParams(top_k=2, context_before=2, context_after=1))


def media_files(root: Path) -> set[str]:
    """Every file under root, relative to it."""
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()} if root.exists() else set()


def sae_lens_write_busy(directory: Path, *, d_in: int, d_sae: int = 48) -> Path:
    """sae_lens_write's SAE with no encoder bias, so that about half its features fire on each token."""
    from safetensors.torch import load_file, save_file

    weights_path = sae_lens_write(directory, d_in=d_in, d_sae=d_sae) / "sae_weights.safetensors"
    weights = load_file(weights_path)
    weights["b_enc"].zero_()
    save_file(weights, weights_path)
    return directory


def live_sae_published(media_root: Path, language_model: LanguageModel, densities: dict[int, float], *,
                       slug: str = "0-res-topk", d_sae: int = 48, dataset: Dataset | None = None) -> Sae:
    """A sae_lens_write_busy SAE whose files a worker loads, published (on dataset, else a new one) with empty
    dashboards in which feature i has density densities[i] (0 where not given) and max activation 1."""
    files_dir = f"saes/{slug}"
    sae_lens_write_busy(media_root / files_dir, d_in=language_model.d_model, d_sae=d_sae)
    sae = sae_make(language_model, slug=slug, d_sae=d_sae, files_dir=files_dir)
    dashboards = dashboards_empty(d_sae)
    dashboards.max_act[:] = 1.0
    for index, density in densities.items():
        dashboards.frac_nonzero[index] = density
    published_run_make(sae, dataset or dataset_make(language_model), dashboards)
    sae.refresh_from_db()
    return sae


def vector_make(language_model: LanguageModel, owner: AbstractUser, *, values: list[float] | None = None,
                layer: int = 1, hook_type: str = "hook_resid_pre", label: str = "joy - sorrow") -> Any:
    """A stored vector (atlas.vectors), by the service the API calls; values default to 0.5 in every dimension."""
    from atlas.vectors.services import vector_create

    width = language_model.hook_widths[f"blocks.{layer}.{hook_type}"]
    return vector_create(language_model_slug=language_model.slug, layer=layer, hook_type=hook_type,
                         values=values if values is not None else [0.5] * width, label=label, default_strength=8.0,
                         owner=owner)
