"""A dashboard run's steps on a worker: compute a shard, merge the shards and publish, compute the metrics.

A run is split into shards (atlas.saes.services.shard_ranges), one task each, so several workers share it.
Each shard's state is saved under MEDIA_ROOT/runs/<run>/, which every worker of a deployment shares; the last
shard to finish queues the merge, which finishes the dashboards and publishes them. While a step computes, its
worker writes a heartbeat to the step's row (workers.heartbeat): a worker killed mid-shard is seen within
minutes, and the recovery sweep every worker runs hands its step to another. Every step can run twice without
harm (states are written atomically, publishing replaces the run's rows, a step another worker is computing is
left to it), so the broker's own late redelivery changes nothing. The state changes are the services of
atlas.saes; failures follow workers.attempts.
"""

import logging
import shutil
from pathlib import Path

from django.conf import settings
from django.db import transaction

from atlas.datasets.selectors import dataset_tokens
from atlas.features.services import run_results_publish
from atlas.saes import services
from atlas.saes.models import DashboardRun, DashboardShard
from atlas.saes.selectors import run_unfinished
from workers.anomaly import run_anomaly_distribution_execute
from workers.attempts import Attempt, attempt_run
from workers.compute.dashboard import dashboards_finish, shard_pass
from workers.compute.metrics import sae_metrics
from workers.compute.progress import Progress, progress_throttled
from workers.compute.shard_files import shard_state_exists, shard_state_load, shard_state_save
from workers.heartbeat import heartbeat_kept, worker_name
from workers.loaded import language_model_loaded, sae_loaded, worker_device

logger = logging.getLogger(__name__)


class RunCancelled(BaseException):
    """The run was cancelled (or failed, or was deleted) while this step computed it: the step stops at its next
    progress report and its task ends quietly, neither retried nor failed. A BaseException, as asyncio's
    CancelledError is, so that workers.attempts' `except Exception` does not take it for a failed try."""


def run_directory(run: DashboardRun) -> Path:
    return services.run_files_path(run.pk)


def _shard_directory(shard: DashboardShard) -> Path:
    return run_directory(shard.run) / f"shard-{shard.index}"


def _throttled(write: Progress) -> Progress:
    return progress_throttled(write, seconds=settings.ATLAS_RUN_PROGRESS_SECONDS)


def _shard_where(shard: DashboardShard) -> str:
    n_shards = DashboardShard.objects.filter(run_id=shard.run_id).count()
    return f"shard {shard.index + 1} of {n_shards} (sequences {shard.first_seq}-{shard.stop_seq - 1})"


def shard_execute(shard_id: int) -> None:
    """Compute one shard (the shard task's body), then queue the merge if it was the last."""
    shards = DashboardShard.objects.select_related("run__sae__language_model", "run__dataset")
    shard = shards.filter(pk=shard_id).first()
    if shard is None or shard.run.is_finished:
        logger.info("shard %s is gone or its run is finished; nothing to do", shard_id)
        return
    directory = _shard_directory(shard)
    if shard.status == DashboardShard.Status.SUCCEEDED and shard_state_exists(directory):
        # Delivered again after it finished: the merge may never have been queued if the worker died.
        services.dashboard_run_merge_queue(run_id=shard.run_id, again=True)
        return
    device, worker = worker_device(), worker_name()
    number = services.shard_start(shard=shard, device=device, worker=worker)
    if number is None:
        logger.info("shard %s is being computed by another worker; nothing to do", shard_id)
        return
    attempt = Attempt(
        number=number,
        step=_shard_where(shard),
        requeue=lambda message: services.shard_requeue(shard=shard, message=message),
        fail=lambda message: services.shard_fail(shard=shard, message=message),
    )
    # Model loading included: a worker that is alive says so until the shard is recorded as done.
    try:
        with heartbeat_kept(lambda: services.shard_heartbeat_write(shard_id=shard.pk, worker=worker)):
            if attempt_run(lambda: _shard_compute(shard, device, directory), attempt):
                services.shard_succeed(shard=shard)
    except RunCancelled:
        logger.info("run %s is finished or gone; shard %s stopped", shard.run_id, shard_id)
        shutil.rmtree(directory, ignore_errors=True)


def _shard_compute(shard: DashboardShard, device: str, directory: Path) -> None:
    if shard_state_exists(directory):  # computed by a try whose worker died before it could say so
        return
    run = shard.run
    model = language_model_loaded(run.sae.language_model, device)
    tokens = dataset_tokens(run.dataset, run.n_sequences)[shard.first_seq : shard.stop_seq]
    sae = sae_loaded(run.sae, device)

    def write(phase: str, done: int, total: int) -> None:
        if not services.shard_progress_write(shard=shard, phase=phase, done=done):
            raise RunCancelled(f"run {run.pk} is finished or gone")

    state = shard_pass(model, sae, tokens, run.sae.hook_name, shard.first_seq, run.dashboard_params, _throttled(write))
    shard_state_save(state, directory)
    if not run_unfinished(run.pk):  # cancelled while the state was saved: its directory may be gone already
        raise RunCancelled(f"run {run.pk} is finished or gone")


def run_merge(run_id: int, *, final: bool = False) -> None:
    """Merge a run's shards, finish its dashboards and publish them (the merge task's body); final: this try is
    the last, whatever the count (for callers that would not retry it)."""
    run = DashboardRun.objects.select_related("sae__language_model", "dataset").filter(pk=run_id).first()
    if run is None or run.is_finished:
        logger.info("run %s is gone or already finished; nothing to merge", run_id)
        return
    worker = worker_name()
    number = services.dashboard_run_merge_start(run_id=run_id, worker=worker)
    if number is None:
        logger.info("run %s is finished or being merged by another worker; nothing to do", run_id)
        return
    merge = Attempt(
        number=settings.ATLAS_TASK_ATTEMPTS if final else number,
        step="merging the shards",
        requeue=lambda message: services.dashboard_run_merge_requeue(run_id=run_id, message=message),
        fail=lambda message: services.dashboard_run_fail(run_id=run_id, message=message),
    )
    try:
        with heartbeat_kept(lambda: services.dashboard_run_merge_heartbeat_write(run_id=run_id, worker=worker)):
            if attempt_run(lambda: _run_merge_publish(run), merge):
                shutil.rmtree(run_directory(run), ignore_errors=True)
    except RunCancelled:
        logger.info("run %s is finished or gone; its merge stopped and published nothing", run_id)


def _run_merge_publish(run: DashboardRun) -> None:
    states = [shard_state_load(_shard_directory(shard)) for shard in run.shards.order_by("index")]
    device = worker_device()
    model = language_model_loaded(run.sae.language_model, device)
    tokens = dataset_tokens(run.dataset, run.n_sequences)

    def write(phase: str, done: int, total: int) -> None:
        if not services.dashboard_run_progress_write(run_id=run.pk, phase=phase, done=done, total=total):
            raise RunCancelled(f"run {run.pk} is finished or gone")

    progress = _throttled(write)
    dashboards = dashboards_finish(states, tokens, model, sae_loaded(run.sae, device), run.dashboard_params, progress)
    progress("saving", 0, run.sae.d_sae)
    with transaction.atomic():
        # Its row locked until the publish commits: a cancel either waits for it or is seen here.
        if not services.dashboard_run_publish_lock(run_id=run.pk):
            raise RunCancelled(f"run {run.pk} is finished or gone")
        run_results_publish(run=run, dashboards=dashboards)
        services.run_anomaly_distribution_queue(run_id=run.pk)


def run_metrics_execute(run_id: int, *, final: bool = False) -> None:
    """Compute and store a run's quality metrics (the metrics task's body). A failure is recorded on the
    metrics alone: the dashboards go on whatever happens here. final: as for run_merge."""
    run = DashboardRun.objects.select_related("sae__language_model", "dataset").filter(pk=run_id).first()
    if run is None:
        logger.info("run %s is gone; no metrics to compute", run_id)
        return
    device, worker = worker_device(), worker_name()
    metrics = services.run_metrics_start(run=run, device=device, worker=worker)
    if metrics is None:
        logger.info("the metrics of run %s are done with or being computed by another worker", run_id)
        return
    metrics_attempt = Attempt(
        number=settings.ATLAS_TASK_ATTEMPTS if final else metrics.attempts,
        step="computing the metrics",
        requeue=lambda message: services.run_metrics_requeue(metrics=metrics, message=message),
        fail=lambda message: services.run_metrics_fail(metrics=metrics, message=message),
    )

    def compute() -> None:
        model = language_model_loaded(run.sae.language_model, device)
        tokens = dataset_tokens(run.dataset, min(run.n_sequences, settings.ATLAS_METRICS_SEQUENCES))
        computed = sae_metrics(model, sae_loaded(run.sae, device), tokens, run.sae.hook_name,
                               batch_size=run.dashboard_params.batch_size)
        services.run_metrics_store(metrics=metrics, computed=computed)

    with heartbeat_kept(lambda: services.run_metrics_heartbeat_write(metrics_id=metrics.pk, worker=worker)):
        attempt_run(compute, metrics_attempt)


def dashboard_run_execute(run_id: int) -> None:
    """Every shard of a run, its merge, then its metrics and anomaly distribution, in this process: for commands
    and tests without a worker. All but the shards get their last try at once, since nothing here would retry them."""
    for shard_id in DashboardShard.objects.filter(run_id=run_id).order_by("index").values_list("pk", flat=True):
        shard_execute(shard_id)
    run = DashboardRun.objects.get(pk=run_id)
    if not run.is_finished:
        run_merge(run_id, final=True)
    run_metrics_execute(run_id, final=True)
    run_anomaly_distribution_execute(run_id, final=True)
