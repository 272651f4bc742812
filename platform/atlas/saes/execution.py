"""Worker-side services: compute a run's shards on the worker's device, then merge and publish them.

A run is split into shards (see services.shard_ranges), one task each, so several workers share it.
Each shard's state is saved under MEDIA_ROOT/runs/<run>/, which every worker of a deployment shares;
the last shard to finish queues the merge, which finishes the dashboards and publishes them.
Tasks are acknowledged late: a worker killed mid-shard leaves its task to be delivered again, and
every step can run twice without harm (states are written atomically, publishing replaces the run).
"""

import logging
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone
from transformer_lens import HookedTransformer

from atlas.celery import app as celery_app
from atlas.datasets.selectors import dataset_tokens
from atlas.features.services import run_results_publish
from atlas.lms.models import LanguageModel
from atlas.lms.selectors import language_model_source
from atlas.saes.models import DashboardRun, DashboardShard, RunMetrics, Sae
from workers.compute.dashboard import dashboards_finish, shard_pass
from workers.compute.language_model import load_language_model
from workers.compute.live import LiveTextError, TextActivations, feature_activations_on_text, top_features_on_text
from workers.compute.metrics import SaeMetrics, sae_metrics
from workers.compute.params import DashboardParams
from workers.compute.sae import SaeFormatError, SparseAutoencoder, sae_load
from workers.compute.shard_files import shard_state_exists, shard_state_load, shard_state_save

logger = logging.getLogger(__name__)

MERGE_TASK = "workers.tasks.dashboard_run_merge"
Progress = Callable[[str, int, int], None]

# One model stays loaded per worker process: loading SmolLM2 takes seconds, a shard may follow a shard.
_loaded: dict[tuple[int, str, torch.dtype], HookedTransformer] = {}


class TaskRetry(Exception):
    """The task failed in a way that may pass; the Celery task should run again after countdown seconds."""

    def __init__(self, message: str, countdown: float) -> None:
        super().__init__(message)
        self.countdown = countdown


def worker_device() -> str:
    return os.environ.get("ATLAS_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")


def worker_dtype(device: str) -> torch.dtype:
    """bf16 (or ATLAS_CUDA_DTYPE) on CUDA, where it is several times faster; float32 on the CPU."""
    dtype: torch.dtype = getattr(torch, settings.ATLAS_CUDA_DTYPE) if device.startswith("cuda") else torch.float32
    return dtype


def _model_for(language_model: LanguageModel, device: str) -> HookedTransformer:
    key = (language_model.pk, device, worker_dtype(device))
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = load_language_model(language_model_source(language_model), device=device, dtype=key[2])
    return _loaded[key]


def run_directory(run: DashboardRun) -> Path:
    return Path(settings.MEDIA_ROOT) / "runs" / str(run.pk)


def _shard_directory(shard: DashboardShard) -> Path:
    return run_directory(shard.run) / f"shard-{shard.index}"


def _params(run: DashboardRun) -> DashboardParams:
    return DashboardParams(
        top_k=run.top_k, context_before=run.context_before, context_after=run.context_after,
        batch_size=run.batch_size,
    )


def _throttled(write: Progress) -> Progress:
    """Pass progress on at most every ATLAS_RUN_PROGRESS_SECONDS so the database is not hammered."""
    last = 0.0

    def report(phase: str, done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done < total and now - last < settings.ATLAS_RUN_PROGRESS_SECONDS:
            return
        last = now
        write(phase, done, total)

    return report


def _shard_progress(shard: DashboardShard) -> Progress:
    """The shard's tokens done, and the run's: the sum over its shards, so the bar covers them all."""
    run_id = shard.run_id

    def write(phase: str, done: int, total: int) -> None:
        DashboardShard.objects.filter(pk=shard.pk).update(progress_done=done)
        done_in_run = DashboardShard.objects.filter(run_id=run_id).aggregate(done=Sum("progress_done"))["done"]
        DashboardRun.objects.filter(pk=run_id, merge_queued=False).update(
            phase=phase, progress_done=done_in_run or 0, progress_total=shard.run.tokens_total
        )

    return _throttled(write)


def _run_progress(run_id: int) -> Progress:
    def write(phase: str, done: int, total: int) -> None:
        DashboardRun.objects.filter(pk=run_id).update(phase=phase, progress_done=done, progress_total=total)

    return _throttled(write)


def dashboard_run_fail(run_id: int, message: str) -> None:
    DashboardRun.objects.filter(pk=run_id).exclude(status=DashboardRun.Status.SUCCEEDED).update(
        status=DashboardRun.Status.FAILED, error=message, finished=timezone.now()
    )


def _sae_for(sae: Sae, device: str) -> SparseAutoencoder:
    # Not cached: on the CPU the tensors stay memory-mapped from the file, which may be replaced meanwhile.
    return sae_load(sae.files_path, device=device, dtype=worker_dtype(device))


def shard_execute(shard_id: int) -> None:
    """Compute one shard (the worker task's body); a failure is retried, then fails the run with its message."""
    shards = DashboardShard.objects.select_related("run__sae__language_model", "run__dataset")
    shard = shards.filter(pk=shard_id).first()
    if shard is None or shard.run.is_finished:
        logger.info("shard %s is gone or its run is finished; nothing to do", shard_id)
        return
    directory = _shard_directory(shard)
    if shard.status == DashboardShard.Status.SUCCEEDED and shard_state_exists(directory):
        # Delivered again after it finished: the merge may never have been queued if the worker died.
        _merge_queue_if_ready(shard.run_id, again=True)
        return
    device = worker_device()
    attempt = shard.attempts + 1
    DashboardShard.objects.filter(pk=shard_id).update(
        status=DashboardShard.Status.RUNNING, attempts=attempt, device=device
    )
    DashboardRun.objects.filter(pk=shard.run_id, status=DashboardRun.Status.QUEUED).update(
        status=DashboardRun.Status.RUNNING, started=timezone.now(), device=device
    )
    try:
        if not shard_state_exists(directory):
            _shard_compute(shard, device, directory)
    except SaeFormatError as error:  # the upload itself is bad: trying again cannot help
        _shard_fail(shard, str(error))
        return
    except Exception as error:
        logger.exception("shard %s of run %s failed (attempt %s)", shard.index, shard.run_id, attempt)
        _shard_failed_attempt(shard, attempt, f"{type(error).__name__}: {error}")
        return
    tokens = shard.n_seqs * shard.run.dataset.context_length
    DashboardShard.objects.filter(pk=shard_id).update(
        status=DashboardShard.Status.SUCCEEDED, progress_done=tokens, error=""
    )
    _merge_queue_if_ready(shard.run_id, again=False)


def _shard_compute(shard: DashboardShard, device: str, directory: Path) -> None:
    run = shard.run
    model = _model_for(run.sae.language_model, device)
    tokens = dataset_tokens(run.dataset, run.n_sequences)[shard.first_seq : shard.stop_seq]
    sae = _sae_for(run.sae, device)
    state = shard_pass(model, sae, tokens, run.sae.hook_name, shard.first_seq, _params(run), _shard_progress(shard))
    shard_state_save(state, directory)


def _shard_where(shard: DashboardShard) -> str:
    n_shards = DashboardShard.objects.filter(run_id=shard.run_id).count()
    return f"shard {shard.index + 1} of {n_shards} (sequences {shard.first_seq}-{shard.stop_seq - 1})"


def _shard_failed_attempt(shard: DashboardShard, attempt: int, message: str) -> None:
    if attempt < settings.ATLAS_TASK_ATTEMPTS:
        DashboardShard.objects.filter(pk=shard.pk).update(status=DashboardShard.Status.QUEUED, error=message)
        raise TaskRetry(message, settings.ATLAS_TASK_RETRY_SECONDS)
    _shard_fail(shard, f"{_shard_where(shard)} failed after {attempt} attempts: {message}")


def _shard_fail(shard: DashboardShard, message: str) -> None:
    DashboardShard.objects.filter(pk=shard.pk).update(status=DashboardShard.Status.FAILED, error=message)
    dashboard_run_fail(shard.run_id, message)


def _merge_queue_if_ready(run_id: int, again: bool) -> None:
    """Queue the merge once every shard has succeeded; `again` queues it even if it was queued before."""
    with transaction.atomic():
        run = DashboardRun.objects.select_for_update().get(pk=run_id)
        if run.is_finished or (run.merge_queued and not again):
            return
        if run.shards.exclude(status=DashboardShard.Status.SUCCEEDED).exists():
            return
        run.merge_queued = True
        run.save(update_fields=["merge_queued"])
        queue = settings.ATLAS_GPU_QUEUE
        transaction.on_commit(lambda: celery_app.send_task(MERGE_TASK, args=[run_id], queue=queue))


def run_merge(run_id: int, attempt: int) -> None:
    """Merge a run's shards, finish its dashboards and publish them (the merge task's body)."""
    run = DashboardRun.objects.select_related("sae__language_model", "dataset").filter(pk=run_id).first()
    if run is None or run.is_finished:
        logger.info("run %s is gone or already finished; nothing to merge", run_id)
        return
    try:
        shards = list(run.shards.order_by("index"))
        states = [shard_state_load(_shard_directory(shard)) for shard in shards]
        device = worker_device()
        model = _model_for(run.sae.language_model, device)
        tokens = dataset_tokens(run.dataset, run.n_sequences)
        progress = _run_progress(run_id)
        dashboards = dashboards_finish(states, tokens, model, _sae_for(run.sae, device), _params(run), progress)
        progress("saving", 0, run.sae.d_sae)
        run_results_publish(run=run, dashboards=dashboards)
    except SaeFormatError as error:
        dashboard_run_fail(run_id, str(error))
        return
    except Exception as error:
        logger.exception("merging run %s failed (attempt %s)", run_id, attempt)
        message = f"{type(error).__name__}: {error}"
        if attempt < settings.ATLAS_TASK_ATTEMPTS:
            raise TaskRetry(message, settings.ATLAS_TASK_RETRY_SECONDS) from error
        dashboard_run_fail(run_id, f"merging the shards failed after {attempt} attempts: {message}")
        return
    shutil.rmtree(run_directory(run), ignore_errors=True)


def run_metrics_execute(run_id: int, attempt: int) -> None:
    """Compute and store a run's quality metrics (the metrics task's body); a failure is retried, then
    recorded on the metrics alone: the dashboards run goes on whatever happens here."""
    run = DashboardRun.objects.select_related("sae__language_model", "dataset").filter(pk=run_id).first()
    if run is None:
        logger.info("run %s is gone; no metrics to compute", run_id)
        return
    metrics, _ = RunMetrics.objects.get_or_create(run=run)
    if metrics.status == RunMetrics.Status.SUCCEEDED:
        return
    device = worker_device()
    RunMetrics.objects.filter(pk=metrics.pk).update(status=RunMetrics.Status.RUNNING, attempts=attempt, device=device)
    try:
        computed = _run_metrics_compute(run, device)
    except SaeFormatError as error:  # the upload itself is bad: trying again cannot help
        _run_metrics_fail(metrics, str(error))
        return
    except Exception as error:
        logger.exception("metrics of run %s failed (attempt %s)", run_id, attempt)
        message = f"{type(error).__name__}: {error}"
        if attempt < settings.ATLAS_TASK_ATTEMPTS:
            RunMetrics.objects.filter(pk=metrics.pk).update(status=RunMetrics.Status.QUEUED, error=message)
            raise TaskRetry(message, settings.ATLAS_TASK_RETRY_SECONDS) from error
        _run_metrics_fail(metrics, f"computing the metrics failed after {attempt} attempts: {message}")
        return
    _run_metrics_store(metrics, computed)


def _run_metrics_compute(run: DashboardRun, device: str) -> SaeMetrics:
    model = _model_for(run.sae.language_model, device)
    tokens = dataset_tokens(run.dataset, min(run.n_sequences, settings.ATLAS_METRICS_SEQUENCES))
    return sae_metrics(model, _sae_for(run.sae, device), tokens, run.sae.hook_name, batch_size=run.batch_size)


def _run_metrics_store(metrics: RunMetrics, computed: SaeMetrics) -> None:
    # A score whose denominator is zero is NaN, which JSON cannot carry: it is stored as unknown.
    values = {name: None if isinstance(value, float) and not math.isfinite(value) else value
              for name, value in asdict(computed).items()}
    RunMetrics.objects.filter(pk=metrics.pk).update(
        status=RunMetrics.Status.SUCCEEDED, error="", finished=timezone.now(), **values
    )


def _run_metrics_fail(metrics: RunMetrics, message: str) -> None:
    RunMetrics.objects.filter(pk=metrics.pk).update(
        status=RunMetrics.Status.FAILED, error=message, finished=timezone.now()
    )


def dashboard_run_execute(run_id: int) -> None:
    """Every shard of a run, its merge, then its metrics, in this process: for commands and tests without a worker."""
    for shard_id in DashboardShard.objects.filter(run_id=run_id).order_by("index").values_list("pk", flat=True):
        shard_execute(shard_id)
    run = DashboardRun.objects.get(pk=run_id)
    if not run.is_finished:
        run_merge(run_id, attempt=settings.ATLAS_TASK_ATTEMPTS)
    run_metrics_execute(run_id, attempt=settings.ATLAS_TASK_ATTEMPTS)


def text_activations_compute(*, sae_id: int, text: str, feature: int | None, n_results: int) -> dict[str, Any]:
    """Run typed text through the SAE's model and the SAE (the live-activation task's body).

    With a feature: that feature's activation on each token; without: the n_results features that fire
    most strongly on the text. Plain lists for the result backend, or {"error": message} for text or a
    feature that cannot be run, which the web turns into a 400.
    """
    sae = Sae.objects.select_related("language_model").filter(pk=sae_id).first()
    if sae is None:
        return {"error": f"SAE {sae_id} no longer exists."}
    device = worker_device()
    model = _model_for(sae.language_model, device)
    try:
        if feature is None:
            found = top_features_on_text(model, _sae_for(sae, device), sae.hook_name, text, n_results)
        else:
            found = feature_activations_on_text(model, _sae_for(sae, device), sae.hook_name, text, feature)
    except LiveTextError as error:
        return {"error": str(error)}
    return _text_activations_payload(found)


def _text_activations_payload(found: TextActivations) -> dict[str, Any]:
    return {
        "tokenIds": found.token_ids.tolist(),
        "features": found.features.tolist(),
        "values": found.values.astype(float).tolist(),
    }
