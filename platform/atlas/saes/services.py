"""Writes for SAEs: store an upload and queue its run, then record how the run's shards, merge and metrics go."""

from __future__ import annotations

import math
import os
import shutil
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.core.files.uploadedfile import TemporaryUploadedFile
from django.db import IntegrityError, transaction
from django.db.models import F, JSONField, Sum, Value
from django.db.models.expressions import CombinedExpression
from django.db.models.query import QuerySet
from django.utils import timezone

from atlas.celery import app as celery_app
from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.archives import ArchiveError
from atlas.saes.models import FINISHED_STATUSES, DashboardRun, DashboardShard, RunAnomalyDistribution, RunMetrics, Sae
from atlas.saes.selectors import sae_may_manage, vector_dashboard_slug, vector_dashboard_slug_reserved
from atlas.saes.upload_checks import PackedSae, UploadCheckStopped, upload_files_check
from atlas.vectors.models import Vector
from atlas.vectors.selectors import vector_may_manage, vector_source_reserved
from workers.compute.hooks import hook_layer
from workers.compute.metric_results import SaeMetrics
from workers.compute.params import DashboardParams
from workers.compute.sae_files import (
    CFG_FILENAME,
    DICTIONARY_LEARNING_CONFIG_FILENAME,
    DICTIONARY_LEARNING_WEIGHTS_FILENAME,
    WEIGHTS_FILENAME,
    SaeConfig,
    SaeFormatError,
    sae_config_from_dict,
)
from workers.compute.sae_release import sae_release_fetch
from workers.compute.vector_sae import VectorInSae, VectorSaeError, vector_sae_write

SHARD_TASK = "workers.tasks.dashboard_shard_execute"
METRICS_TASK = "workers.tasks.dashboard_run_metrics"
MERGE_TASK = "workers.tasks.dashboard_run_merge"
ANOMALY_TASK = "workers.tasks.dashboard_run_anomaly_distribution"
# Neuronpedia's short names for where an SAE reads, as in its ids ("6-res-jb", "8-att-kk").
_HOOK_KIND = {
    "hook_resid_post": "res",
    "hook_resid_pre": "res-pre",
    "hook_resid_mid": "res-mid",
    "hook_z": "att",
    "hook_attn_out": "att-out",
    "hook_mlp_out": "mlp-out",
    "hook_post": "mlp",
}


class SaeUploadError(ValueError):
    """An upload that cannot be stored; `field` names the form field the message belongs to."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


@dataclass(frozen=True)
class RunParams:
    n_sequences: int | None = None
    top_k: int = DashboardParams.top_k
    context_before: int = DashboardParams.context_before
    context_after: int = DashboardParams.context_after


# The form field each file of an SAE belongs to, so a problem with a file is shown beside it.
_FIELD_OF_FILE = {
    CFG_FILENAME: "cfg_file",
    DICTIONARY_LEARNING_CONFIG_FILENAME: "cfg_file",
    WEIGHTS_FILENAME: "weights_file",
    DICTIONARY_LEARNING_WEIGHTS_FILENAME: "weights_file",
}


def _too_large(name: str | None, size: int, field: str) -> SaeUploadError:
    limit = settings.ATLAS_MAX_UPLOAD_BYTES
    return SaeUploadError(f"{name} is {size:,} bytes or more, over the {limit:,} byte limit.", field)


def _save_upload(upload: File[bytes], target: Path, field: str) -> None:
    """Move or copy an upload to target, counting, so a file over the limit is never kept or held whole."""
    limit = settings.ATLAS_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise _too_large(upload.name, upload.size, field)
    if isinstance(upload, TemporaryUploadedFile) and _moved(upload, target):
        return
    written = 0
    with open(target, "wb") as out:
        for chunk in upload.chunks():
            written += len(chunk)
            if written > limit:
                raise _too_large(upload.name, written, field)
            out.write(chunk)


def _moved(upload: TemporaryUploadedFile, target: Path) -> bool:
    """Rename Django's temporary file (its size counted as it arrived) into staging, rather than copy hundreds of
    megabytes in the request; False when they are on different filesystems. Django's close() allows the move."""
    try:
        os.replace(upload.temporary_file_path(), target)
    except OSError:
        return False
    target.chmod(0o644)  # a temporary file is private to the web's user; the workers read stored files
    return True


def _is_dictionary_learning(weights_file: File[bytes]) -> bool:
    return (weights_file.name or "").lower().endswith((".pt", ".pth"))


def _stage_files(
    staging: Path,
    cfg_file: File[bytes] | None,
    weights_file: File[bytes] | None,
    archive: File[bytes] | None,
) -> PackedSae | None:
    """Save the uploaded files into staging; an archive is only saved, for the check process to unpack."""
    if archive is not None:
        packed = staging / "upload.archive"
        _save_upload(archive, packed, "archive")
        return PackedSae(packed, archive.name or "archive", settings.ATLAS_MAX_UPLOAD_BYTES)
    if cfg_file is None or weights_file is None:
        raise SaeUploadError(
            "Upload cfg.json and sae_weights.safetensors (SAELens), or config.json and ae.pt (dictionary_learning), "
            "or one .zip / .tar.gz of the SAE directory."
        )
    cfg_name, weights_name = (
        (DICTIONARY_LEARNING_CONFIG_FILENAME, DICTIONARY_LEARNING_WEIGHTS_FILENAME)
        if _is_dictionary_learning(weights_file) else (CFG_FILENAME, WEIGHTS_FILENAME)
    )
    _save_upload(cfg_file, staging / cfg_name, "cfg_file")
    _save_upload(weights_file, staging / weights_name, "weights_file")
    return None


def _checked_config(staging: Path, archive: PackedSae | None) -> SaeConfig:
    """Every check of the files, values included, made without torch (the web process never imports it) and in
    the check process (atlas.saes.upload_checks), so the request thread only waits."""
    try:
        return upload_files_check(staging, archive)
    except ArchiveError as error:
        raise SaeUploadError(str(error), "archive") from error
    except SaeFormatError as error:
        raise SaeUploadError(str(error), _FIELD_OF_FILE.get(error.filename or "")) from error
    except UploadCheckStopped as error:
        raise SaeUploadError(
            "The check of the files stopped before it finished (the server may be short of memory); "
            "try the upload again, and tell the site's admin if it keeps happening."
        ) from error


def _checked_hook(language_model: LanguageModel, config: SaeConfig, hook_name: str) -> str:
    hook = hook_name.strip() or (config.hook_name or "")
    if not hook:
        raise SaeUploadError("cfg.json names no hook point; enter one, e.g. blocks.5.hook_resid_post.", "hook_name")
    width = language_model.hook_widths.get(hook)
    if width is None:
        raise SaeUploadError(
            f"{language_model.slug} has no hook named '{hook}'; it has layers 0-{language_model.n_layers - 1}, "
            f"and hook names look like {_hook_example(language_model)} (the upload page suggests them all).",
            "hook_name",
        )
    if width != config.d_in:
        raise SaeUploadError(
            f"W_enc is [{config.d_in}, {config.d_sae}] but the model's {hook} has width {width}.", "weights_file"
        )
    return hook


def _hook_example(language_model: LanguageModel) -> str:
    """A residual-stream hook of a middle layer, the commonest place for an SAE, or any hook the model has."""
    middle = f"blocks.{language_model.n_layers // 2}.hook_resid_post"
    if middle in language_model.hook_widths:
        return middle
    return next(iter(sorted(language_model.hook_widths)), "blocks.0.hook_resid_post")


def _duplicate_id(language_model: LanguageModel, slug: str) -> SaeUploadError:
    return SaeUploadError(f"{language_model.slug} already has an SAE '{slug}'; choose another id.", "slug")


def sae_default_slug(hook_name: str, d_sae: int) -> str:
    layer = hook_layer(hook_name)
    kind = _HOOK_KIND.get(hook_name.rsplit(".", 1)[-1], "sae")
    return f"{'x' if layer is None else layer}-{kind}-{d_sae}"


def _check_run_params(language_model: LanguageModel, dataset: Dataset, params: RunParams) -> None:
    if dataset.language_model_id != language_model.pk:
        raise SaeUploadError(
            f"Dataset '{dataset.slug}' was tokenized for {dataset.language_model.slug}, not {language_model.slug}.",
            "dataset",
        )
    if params.n_sequences and params.n_sequences > dataset.n_sequences:
        raise SaeUploadError(f"Dataset '{dataset.slug}' has only {dataset.n_sequences} sequences.", "n_sequences")
    if params.context_before + params.context_after + 1 > dataset.context_length:
        raise SaeUploadError(
            f"A context window of {params.context_before} + 1 + {params.context_after} tokens does not fit in "
            f"sequences of {dataset.context_length}.",
            "context_before",
        )


def shard_ranges(n_sequences: int, shard_sequences: int, batch_size: int) -> list[tuple[int, int]]:
    """(first sequence, count) of each shard: about shard_sequences each, starting on batch boundaries."""
    size = max(batch_size, -(-shard_sequences // batch_size) * batch_size)
    return [(first, min(size, n_sequences - first)) for first in range(0, n_sequences, size)]


def dashboard_run_create(*, sae: Sae, dataset: Dataset, params: RunParams) -> DashboardRun:
    """Record a run, its shards and its metrics, and queue their tasks on the GPU queue once the transaction
    commits: the shards first, as the dashboards are what the SAE's pages wait for."""
    n_sequences = params.n_sequences or dataset.n_sequences
    dashboard_params = DashboardParams(
        top_k=params.top_k,
        context_before=params.context_before,
        context_after=params.context_after,
        batch_size=settings.ATLAS_RUN_BATCH_SIZE,
    )
    run = DashboardRun.objects.create(
        sae=sae,
        dataset=dataset,
        n_sequences=n_sequences,
        params=dashboard_params.as_json(),
        tokens_total=n_sequences * dataset.context_length,
        progress_total=n_sequences * dataset.context_length,
    )
    shards = DashboardShard.objects.bulk_create(
        DashboardShard(run=run, index=index, first_seq=first, n_seqs=count)
        for index, (first, count) in enumerate(
            shard_ranges(n_sequences, settings.ATLAS_SHARD_SEQUENCES, dashboard_params.batch_size)
        )
    )
    RunMetrics.objects.create(run=run)
    queue = settings.ATLAS_GPU_QUEUE
    shard_ids = [shard.pk for shard in shards]
    run_id = run.pk

    def send() -> None:
        for shard_id in shard_ids:
            celery_app.send_task(SHARD_TASK, args=[shard_id], queue=queue)
        celery_app.send_task(METRICS_TASK, args=[run_id], queue=queue)

    transaction.on_commit(send)
    return run


def sae_upload(
    *,
    language_model: LanguageModel,
    dataset: Dataset,
    uploaded_by: User | None,
    cfg_file: File[bytes] | None = None,
    weights_file: File[bytes] | None = None,
    archive: File[bytes] | None = None,
    hook_name: str = "",
    slug: str = "",
    description: str = "",
    params: RunParams = RunParams(),
) -> Sae:
    """Check an uploaded SAE completely, then store it and queue its dashboards; nothing stays on failure."""
    media = Path(settings.MEDIA_ROOT)
    staging = media / "staging" / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        archive_saved = _stage_files(staging, cfg_file, weights_file, archive)
        config = _checked_config(staging, archive_saved)
        hook = _checked_hook(language_model, config, hook_name)
        _check_run_params(language_model, dataset, params)
        slug = slug.strip() or sae_default_slug(hook, config.d_sae)
        if Sae.objects.filter(language_model=language_model, slug=slug).exists():
            raise _duplicate_id(language_model, slug)
        if vector_source_reserved(slug) or vector_dashboard_slug_reserved(slug):
            raise SaeUploadError(f"'{slug}' is the shape of a vector source's id (<layer>-vectors-resid-pre/post) "
                                 "or a vector dashboard's (<layer>-vectors-<ids>-dash); choose another id.", "slug")
        return _sae_store(staging, media, language_model, dataset, uploaded_by, config, hook, slug, description,
                          params)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sae_store(
    staging: Path,
    media: Path,
    language_model: LanguageModel,
    dataset: Dataset,
    uploaded_by: User | None,
    config: SaeConfig,
    hook: str,
    slug: str,
    description: str,
    params: RunParams,
) -> Sae:
    files_dir = Path("saes") / uuid.uuid4().hex
    final = media / files_dir
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        with transaction.atomic():
            sae = Sae.objects.create(
                language_model=language_model,
                slug=slug,
                hook_name=hook,
                layer=hook_layer(hook),
                architecture=config.architecture,
                d_in=config.d_in,
                d_sae=config.d_sae,
                cfg=config.raw,
                description=description,
                files_dir=str(files_dir),
                uploaded_by=uploaded_by,
            )
            staging.rename(final)
            dashboard_run_create(sae=sae, dataset=dataset, params=params)
    except IntegrityError as error:
        # Another upload took the same id between our check and this insert.
        shutil.rmtree(final, ignore_errors=True)
        raise _duplicate_id(language_model, slug) from error
    except Exception:
        shutil.rmtree(final, ignore_errors=True)
        raise
    return sae


def sae_release_add(
    *,
    language_model: LanguageModel,
    dataset: Dataset,
    uploaded_by: User | None,
    release: str,
    sae_id: str,
    hub_cache_dir: Path | None = None,
    hook_name: str = "",
    slug: str = "",
    description: str = "",
    params: RunParams = RunParams(),
) -> Sae:
    """Fetch an SAE by SAELens release and id (needs hub access, or the files in the hub cache), then store it
    exactly as an upload of its files, with the same checks."""
    fetched = Path(settings.MEDIA_ROOT) / "staging" / f"release-{uuid.uuid4().hex}"
    try:
        try:
            sae_release_fetch(release, sae_id, fetched, cache_dir=hub_cache_dir)
        except SaeFormatError as error:
            raise SaeUploadError(str(error)) from error
        with (fetched / CFG_FILENAME).open("rb") as cfg, (fetched / WEIGHTS_FILENAME).open("rb") as weights:
            return sae_upload(
                language_model=language_model,
                dataset=dataset,
                uploaded_by=uploaded_by,
                cfg_file=File(cfg, name=CFG_FILENAME),
                weights_file=File(weights, name=WEIGHTS_FILENAME),
                hook_name=hook_name,
                slug=slug,
                description=description or f"SAELens release {release}, {sae_id}",
                params=params,
            )
    finally:
        shutil.rmtree(fetched, ignore_errors=True)


# How a run goes, as its worker steps (workers.runs) report it. Each write can be repeated without harm: tasks are
# acknowledged late, so any step may run twice.


def _run_row_lock(run_id: int) -> None:
    """Lock the run's row before any of its shards' rows: every transaction that writes both (starting or failing a
    shard, cancelling, sweeping) takes them in this order, so none can deadlock with another."""
    list(DashboardRun.objects.select_for_update().filter(pk=run_id).values_list("pk", flat=True))


def shard_start(*, shard: DashboardShard, device: str, worker: str) -> int | None:
    """Record another try at the shard on device by worker, with its first heartbeat, and its run as running if
    it was still queued; returns the try's number (a redelivery after a worker died counts as a try too), or None
    when another worker is computing the shard (a message delivered late: nothing to do, no try counted)."""
    now = timezone.now()
    with transaction.atomic():
        _run_row_lock(shard.run_id)
        current = DashboardShard.objects.select_for_update().get(pk=shard.pk)
        if current.status == DashboardShard.Status.RUNNING and _beating_elsewhere(current.worker, current.heartbeat,
                                                                                  worker, now):
            return None
        attempt = current.attempts + 1
        DashboardShard.objects.filter(pk=shard.pk).update(
            status=DashboardShard.Status.RUNNING, attempts=attempt, device=device, worker=worker, heartbeat=now
        )
        DashboardRun.objects.filter(pk=shard.run_id, status=DashboardRun.Status.QUEUED).update(
            status=DashboardRun.Status.RUNNING, started=now, device=device
        )
        if attempt > 1:
            _restart_record(run_id=shard.run_id, step=_shard_name(current), worker=worker, attempt=attempt, now=now)
    return attempt


def shard_progress_write(*, shard: DashboardShard, phase: str, done: int) -> bool:
    """The shard's tokens done, and the run's: the sum over its shards, so the run's bar covers them all. False
    when the run is finished (cancelled, failed) or gone: its worker should stop (workers.runs.RunCancelled)."""
    if not _unfinished(DashboardShard.objects.filter(pk=shard.pk)).update(progress_done=done):
        return False
    done_in_run = DashboardShard.objects.filter(run_id=shard.run_id).aggregate(done=Sum("progress_done"))["done"]
    # Once the merge is queued the run's bar is the merge's, which a slow shard's last report must not undo.
    DashboardRun.objects.filter(pk=shard.run_id, merge_queued=False).update(
        phase=phase, progress_done=done_in_run or 0, progress_total=shard.run.tokens_total
    )
    return True


def shard_succeed(*, shard: DashboardShard) -> None:
    """Mark the shard done with all of its tokens counted, then queue the merge if it was the last."""
    DashboardShard.objects.filter(pk=shard.pk).update(
        status=DashboardShard.Status.SUCCEEDED, progress_done=shard.n_seqs * shard.run.dataset.context_length,
        error="",
    )
    dashboard_run_merge_queue(run_id=shard.run_id)


def shard_requeue(*, shard: DashboardShard, message: str) -> None:
    """A try failed and another will follow: the shard waits again, showing why the last one failed."""
    DashboardShard.objects.filter(pk=shard.pk).update(status=DashboardShard.Status.QUEUED, error=message)


def shard_fail(*, shard: DashboardShard, message: str) -> None:
    """The shard failed for good, and with it the run."""
    with transaction.atomic():
        _run_row_lock(shard.run_id)
        DashboardShard.objects.filter(pk=shard.pk).update(status=DashboardShard.Status.FAILED, error=message)
        dashboard_run_fail(run_id=shard.run_id, message=message)


def dashboard_run_fail(*, run_id: int, message: str) -> None:
    """Fail the run with message, unless it has already succeeded (a late shard cannot undo a publish)."""
    DashboardRun.objects.filter(pk=run_id).exclude(status=DashboardRun.Status.SUCCEEDED).update(
        status=DashboardRun.Status.FAILED, error=message, finished=timezone.now()
    )


def dashboard_run_progress_write(*, run_id: int, phase: str, done: int, total: int) -> bool:
    """The merge's progress; False when the run is finished (cancelled) or gone: its worker should stop."""
    unfinished = DashboardRun.objects.filter(pk=run_id).exclude(status__in=FINISHED_STATUSES)
    return bool(unfinished.update(phase=phase, progress_done=done, progress_total=total))


def dashboard_run_merge_queue(*, run_id: int, again: bool = False) -> None:
    """Queue the merge once every shard has succeeded, exactly once: the run's row is locked while it is decided,
    so two shards finishing together cannot both queue it. `again` queues it even if it was queued before, for a
    finished shard delivered again (its worker may have died before the merge task was sent), unless a merge is
    being computed (its heartbeat is fresh)."""
    with transaction.atomic():
        run = DashboardRun.objects.select_for_update().get(pk=run_id)
        if run.is_finished or (run.merge_queued and (not again or _merge_beating(run, timezone.now()))):
            return
        if run.shards.exclude(status=DashboardShard.Status.SUCCEEDED).exists():
            return
        run.merge_queued = True
        run.save(update_fields=["merge_queued"])
        queue = settings.ATLAS_GPU_QUEUE
        transaction.on_commit(lambda: celery_app.send_task(MERGE_TASK, args=[run_id], queue=queue))


def run_metrics_start(*, run: DashboardRun, device: str, worker: str) -> RunMetrics | None:
    """Record another try at the run's metrics on device by worker, with its first heartbeat; the metrics with
    the try counted in `attempts`, or None when they are done with or another worker is computing them."""
    metrics, _ = RunMetrics.objects.get_or_create(run=run)
    now = timezone.now()
    with transaction.atomic():
        _run_row_lock(run.pk)
        current = RunMetrics.objects.select_for_update().get(pk=metrics.pk)
        if current.status in FINISHED_STATUSES or (
            current.status == RunMetrics.Status.RUNNING
            and _beating_elsewhere(current.worker, current.heartbeat, worker, now)
        ):
            return None
        current.attempts += 1
        RunMetrics.objects.filter(pk=metrics.pk).update(
            status=RunMetrics.Status.RUNNING, attempts=current.attempts, device=device, worker=worker, heartbeat=now
        )
        if current.attempts > 1:
            _restart_record(run_id=run.pk, step="Quality metrics", worker=worker, attempt=current.attempts, now=now)
    return current


def run_metrics_store(*, metrics: RunMetrics, computed: SaeMetrics) -> None:
    # A score whose denominator is zero is NaN, which JSON cannot carry: it is stored as unknown.
    values = {name: None if isinstance(value, float) and not math.isfinite(value) else value
              for name, value in asdict(computed).items()}
    _not_cancelled(RunMetrics.objects.filter(pk=metrics.pk)).update(
        status=RunMetrics.Status.SUCCEEDED, error="", finished=timezone.now(), **values
    )


def run_metrics_requeue(*, metrics: RunMetrics, message: str) -> None:
    """A try failed and another will follow."""
    _not_cancelled(RunMetrics.objects.filter(pk=metrics.pk)).update(status=RunMetrics.Status.QUEUED, error=message)


def run_metrics_fail(*, metrics: RunMetrics, message: str) -> None:
    """The metrics failed for good; the dashboards go on regardless, and the SAE page shows the message."""
    _not_cancelled(RunMetrics.objects.filter(pk=metrics.pk)).update(
        status=RunMetrics.Status.FAILED, error=message, finished=timezone.now()
    )


# Recovery: a worker that dies mid-step (SIGKILL, out of memory, a lost machine) stops writing the heartbeat of
# the row it computes; every worker sweeps for such rows (workers.heartbeat) and hands them to another worker, or
# fails them once ATLAS_TASK_ATTEMPTS are spent, saying so in the run's events. Minutes, where the broker would
# hand the task out again only after its visibility timeout (hours); that late delivery then finds the step done
# or being computed, and changes nothing.


def _stale_after() -> timedelta:
    return timedelta(seconds=settings.ATLAS_SHARD_STALE_SECONDS)


def _beating_elsewhere(worker_then: str, heartbeat: datetime | None, worker: str, now: datetime) -> bool:
    """Whether another worker's heartbeat is fresh: that worker is computing the step now."""
    return worker_then != worker and heartbeat is not None and now - heartbeat < _stale_after()


def _merge_beating(run: DashboardRun, now: datetime) -> bool:
    return run.merge_heartbeat is not None and now - run.merge_heartbeat < _stale_after()


def run_event_append(*, run_id: int, message: str, now: datetime) -> None:
    """Add an event to the run's page, in one statement (jsonb ||), so events written at once are all kept."""
    event = Value([{"at": now.isoformat(), "message": message}], output_field=JSONField())
    DashboardRun.objects.filter(pk=run_id).update(
        events=CombinedExpression(F("events"), "||", event, output_field=JSONField())
    )


def _shard_name(shard: DashboardShard) -> str:
    return f"Shard {shard.index + 1} of {DashboardShard.objects.filter(run_id=shard.run_id).count()}"


def _restart_record(*, run_id: int, step: str, worker: str, attempt: int, now: datetime) -> None:
    run_event_append(run_id=run_id, now=now,
                     message=f"{step}: restarted on {worker} (attempt {attempt} of {settings.ATLAS_TASK_ATTEMPTS}).")


def _silent_for(heartbeat: datetime, now: datetime) -> str:
    return f"no heartbeat for {(now - heartbeat).total_seconds():.0f} s"


def _gave_up(attempts: int) -> str:
    return (f"that was its last attempt ({attempts} of {settings.ATLAS_TASK_ATTEMPTS}). Look in the workers' logs "
            "for why they stop (out of memory is the usual cause), then start the run again.")


def shard_heartbeat_write(*, shard_id: int, worker: str) -> None:
    """The shard's worker is alive; written only while the shard is still that worker's."""
    DashboardShard.objects.filter(pk=shard_id, worker=worker, status=DashboardShard.Status.RUNNING).update(
        heartbeat=timezone.now()
    )


def dashboard_run_merge_start(*, run_id: int, worker: str) -> int | None:
    """Record another try at the run's merge by worker, with its first heartbeat; the try's number, or None when
    the run is finished or another worker is merging it (a message delivered late)."""
    now = timezone.now()
    with transaction.atomic():
        run = DashboardRun.objects.select_for_update().get(pk=run_id)
        if run.is_finished or (run.merge_worker != worker and _merge_beating(run, now)):
            return None
        attempt = run.merge_attempts + 1
        DashboardRun.objects.filter(pk=run_id).update(merge_attempts=attempt, merge_worker=worker,
                                                      merge_heartbeat=now)
        if attempt > 1:
            _restart_record(run_id=run_id, step="Merging the shards", worker=worker, attempt=attempt, now=now)
    return attempt


def dashboard_run_merge_heartbeat_write(*, run_id: int, worker: str) -> None:
    DashboardRun.objects.filter(pk=run_id, merge_worker=worker, merge_heartbeat__isnull=False).exclude(
        status__in=FINISHED_STATUSES
    ).update(merge_heartbeat=timezone.now())


def dashboard_run_merge_requeue(*, run_id: int, message: str) -> None:
    """A merge try failed and another will follow: nobody computes the merge until then, so no sweep takes it."""
    DashboardRun.objects.filter(pk=run_id).update(merge_heartbeat=None)


def run_metrics_heartbeat_write(*, metrics_id: int, worker: str) -> None:
    RunMetrics.objects.filter(pk=metrics_id, worker=worker, status=RunMetrics.Status.RUNNING).update(
        heartbeat=timezone.now()
    )


def _send_on_commit(task: str, object_id: int) -> None:
    queue = settings.ATLAS_GPU_QUEUE
    transaction.on_commit(lambda: celery_app.send_task(task, args=[object_id], queue=queue))


def _recovered(what: str, attempts: int, hand_on: Callable[[str], None], give_up: Callable[[str], None]) -> str:
    """Hand a dead worker's step to another while it has attempts left, else fail it; the event's message."""
    if attempts < settings.ATLAS_TASK_ATTEMPTS:
        message = f"{what}; handed to another worker (attempt {attempts + 1} of {settings.ATLAS_TASK_ATTEMPTS})."
        hand_on(message)
    else:
        message = f"{what}; {_gave_up(attempts)}"
        give_up(message)
    return message


# The sweep takes every lock with SKIP LOCKED, the run's row first, and writes only rows it holds: it never waits
# on a lock, so it can neither deadlock with a cancel or a worker nor block one; what it skips, the next sweep takes.
def _run_lock(run_id: int, *, unless: Collection[str] = FINISHED_STATUSES) -> bool:
    held = DashboardRun.objects.select_for_update(skip_locked=True).filter(pk=run_id).exclude(status__in=unless)
    return held.values_list("pk", flat=True).first() is not None


def _shard_recover(shard_id: int, run_id: int, now: datetime) -> str | None:
    with transaction.atomic():
        shard = (DashboardShard.objects.select_for_update(skip_locked=True, of=("self",)).select_related("run__dataset")
                 .filter(pk=shard_id, status=DashboardShard.Status.RUNNING, heartbeat__lt=now - _stale_after())
                 .first()) if _run_lock(run_id) else None
        if shard is None or shard.heartbeat is None:
            return None
        total = shard.n_seqs * shard.run.dataset.context_length
        what = (f"{_shard_name(shard)}: worker {shard.worker or 'unknown'} stopped reporting at "
                f"{shard.progress_done} / {total} tokens ({_silent_for(shard.heartbeat, now)})")

        def hand_on(message: str) -> None:
            DashboardShard.objects.filter(pk=shard_id).update(status=DashboardShard.Status.QUEUED, error=message)
            _send_on_commit(SHARD_TASK, shard_id)

        message = _recovered(what, shard.attempts, hand_on, lambda message: shard_fail(shard=shard, message=message))
        run_event_append(run_id=run_id, message=message, now=now)
    return message


def _merge_recover(run_id: int, now: datetime) -> str | None:
    with transaction.atomic():
        run = (DashboardRun.objects.select_for_update(skip_locked=True)
               .filter(pk=run_id, merge_queued=True, merge_heartbeat__lt=now - _stale_after())
               .exclude(status__in=FINISHED_STATUSES).first())
        if run is None or run.merge_heartbeat is None:
            return None
        what = (f"Merging the shards: worker {run.merge_worker or 'unknown'} stopped reporting "
                f"({_silent_for(run.merge_heartbeat, now)})")

        def hand_on(message: str) -> None:
            DashboardRun.objects.filter(pk=run_id).update(merge_heartbeat=None)
            _send_on_commit(MERGE_TASK, run_id)

        message = _recovered(what, run.merge_attempts, hand_on,
                             lambda message: dashboard_run_fail(run_id=run_id, message=message))
        run_event_append(run_id=run_id, message=message, now=now)
    return message


def _metrics_recover(metrics_id: int, run_id: int, now: datetime) -> str | None:
    with transaction.atomic():
        # The metrics go on after the dashboards succeed or fail, but not once the run is cancelled.
        metrics = (RunMetrics.objects.select_for_update(skip_locked=True)
                   .filter(pk=metrics_id, status=RunMetrics.Status.RUNNING, heartbeat__lt=now - _stale_after())
                   .first()) if _run_lock(run_id, unless={DashboardRun.Status.CANCELLED}) else None
        if metrics is None or metrics.heartbeat is None:
            return None
        what = (f"Quality metrics: worker {metrics.worker or 'unknown'} stopped reporting "
                f"({_silent_for(metrics.heartbeat, now)})")

        def hand_on(message: str) -> None:
            run_metrics_requeue(metrics=metrics, message=message)
            _send_on_commit(METRICS_TASK, run_id)

        message = _recovered(what, metrics.attempts, hand_on,
                             lambda message: run_metrics_fail(metrics=metrics, message=message))
        run_event_append(run_id=run_id, message=message, now=now)
    return message


def _found(messages: Iterable[str | None]) -> list[str]:
    return [message for message in messages if message is not None]


def runs_recover(*, now: datetime) -> list[str]:
    """Hand every shard, merge and metrics whose worker stopped reporting (no heartbeat for
    ATLAS_SHARD_STALE_SECONDS) to another worker, or fail it when its attempts are spent; the events written.
    Rows another sweeper holds are skipped (SKIP LOCKED), so workers may all sweep at once."""
    stale = now - _stale_after()
    shards = (DashboardShard.objects.filter(status=DashboardShard.Status.RUNNING, heartbeat__lt=stale)
              .exclude(run__status__in=FINISHED_STATUSES).values_list("pk", "run_id"))
    merges = (DashboardRun.objects.filter(merge_queued=True, merge_heartbeat__lt=stale)
              .exclude(status__in=FINISHED_STATUSES).values_list("pk", flat=True))
    metrics = (RunMetrics.objects.filter(status=RunMetrics.Status.RUNNING, heartbeat__lt=stale)
               .exclude(run__status=DashboardRun.Status.CANCELLED).values_list("pk", "run_id"))
    return [
        *_found(_shard_recover(shard_id, run_id, now) for shard_id, run_id in shards),
        *_found(_merge_recover(run_id, now) for run_id in merges),
        *_found(_metrics_recover(metrics_id, run_id, now) for metrics_id, run_id in metrics),
    ]


# Owners' actions: cancel a run, run the SAE again, delete it. Only its uploader or staff may (sae_may_manage).


class SaeActionRefused(Exception):
    """An owner's action that cannot be done; the message says why and what to do instead."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SaeActionForbidden(SaeActionRefused):
    """The person asking is neither the SAE's uploader nor staff."""


class SaeActionConflict(SaeActionRefused):
    """The action does not fit the state things are in (cancelling a run that has finished)."""


def _unfinished(shards: QuerySet[DashboardShard]) -> QuerySet[DashboardShard]:
    return shards.exclude(run__status__in=FINISHED_STATUSES)


def _not_cancelled(metrics: QuerySet[RunMetrics]) -> QuerySet[RunMetrics]:
    return metrics.exclude(status=RunMetrics.Status.CANCELLED)


def dashboard_run_publish_lock(*, run_id: int) -> bool:
    """Lock the run's row for the rest of the caller's transaction, the one that publishes it, so that a cancel
    waits for the publish or the publish sees the cancel; False when the run is finished or gone: no publish."""
    unfinished = DashboardRun.objects.select_for_update().filter(pk=run_id).exclude(status__in=FINISHED_STATUSES)
    return unfinished.values_list("pk", flat=True).first() is not None


def run_files_path(run_id: int) -> Path:
    """Where the workers keep a run's shard states until its merge (workers.runs.run_directory)."""
    return Path(settings.MEDIA_ROOT) / "runs" / str(run_id)


def sae_manage_check(*, sae: Sae, by: User, action: str) -> None:
    """Refuse (SaeActionForbidden) anyone but the SAE's uploader or staff; action ends the message's sentence."""
    if not sae_may_manage(sae, by):
        owner = sae.uploaded_by.username if sae.uploaded_by else "nobody: it has no uploader"
        raise SaeActionForbidden(
            f"Only the person who uploaded {sae} ({owner}) or staff may {action}; log in as them, or ask staff."
        )


def _run_cancel(run: DashboardRun, *, message: str) -> None:
    """Cancel a run whose row the caller holds locked: its unfinished shards and metrics too, its shard states
    removed once this commits. Workers computing it stop at their next progress report."""
    now = timezone.now()
    DashboardRun.objects.filter(pk=run.pk).update(status=DashboardRun.Status.CANCELLED, finished=now)
    DashboardShard.objects.filter(run=run).exclude(status__in=FINISHED_STATUSES).update(
        status=DashboardShard.Status.CANCELLED
    )
    RunMetrics.objects.filter(run=run).exclude(status__in=FINISHED_STATUSES).update(
        status=RunMetrics.Status.CANCELLED, finished=now
    )
    run_event_append(run_id=run.pk, message=message, now=now)
    directory = run_files_path(run.pk)
    transaction.on_commit(lambda: shutil.rmtree(directory, ignore_errors=True))


def dashboard_run_cancel(*, run: DashboardRun, by: User) -> DashboardRun:
    """Stop a run that has not finished; the SAE keeps the dashboards it had published before."""
    sae_manage_check(sae=run.sae, by=by, action="cancel its runs")
    with transaction.atomic():
        locked = DashboardRun.objects.select_for_update().get(pk=run.pk)
        if locked.is_finished:
            raise SaeActionConflict(
                f"Run {run.pk} is finished ({locked.status}); there is nothing to cancel. Re-run the SAE to "
                "compute its dashboards again."
            )
        _run_cancel(locked, message=f"Cancelled by {by.username}.")
    locked.refresh_from_db()
    return locked


def _runs_unfinished_cancel(sae: Sae, *, message: str) -> None:
    for run in DashboardRun.objects.select_for_update().filter(sae=sae).exclude(status__in=FINISHED_STATUSES):
        _run_cancel(run, message=message)


def dashboard_run_again(*, sae: Sae, by: User) -> DashboardRun:
    """A new run of the SAE on the dataset, sequences and chosen parameters of its newest run, once any run still
    going is cancelled; the published dashboards stay until the new run publishes its own."""
    sae_manage_check(sae=sae, by=by, action="run it again")
    with transaction.atomic():
        latest = sae.runs.select_related("dataset").order_by("-created").first()
        if latest is None:
            raise SaeActionConflict(f"{sae} has never been run, so there is no run to repeat; upload it again.")
        _runs_unfinished_cancel(sae, message=f"Cancelled by {by.username}, who started the SAE again.")
        chosen = latest.dashboard_params
        params = RunParams(n_sequences=latest.n_sequences, top_k=chosen.top_k,
                           context_before=chosen.context_before, context_after=chosen.context_after)
        return dashboard_run_create(sae=sae, dataset=latest.dataset, params=params)


@dataclass(frozen=True)
class SaeDeleted:
    """What sae_delete removed, counted by the database."""

    runs: int
    features: int
    explanations: int


def _files_removable(sae: Sae) -> list[Path]:
    """The SAE's directory, unless it is not inside MEDIA_ROOT/saes or another SAE shares it (records made by
    hand or by tests), and its runs' shard states."""
    saes_root = (Path(settings.MEDIA_ROOT) / "saes").resolve()
    files = sae.files_path.resolve()
    shared = Sae.objects.filter(files_dir=sae.files_dir).exclude(pk=sae.pk).exists()
    own = [files] if files.is_relative_to(saes_root) and files != saes_root and not shared else []
    return own + [run_files_path(run_id) for run_id in sae.runs.values_list("pk", flat=True)]


def sae_delete(*, sae: Sae, by: User) -> SaeDeleted:
    """Delete the SAE with everything that refers to it (runs, shards, metrics, features, labels) in one
    transaction, cancelling its run first if one is going; its files go once that commits, so a delete that
    fails leaves the SAE whole."""
    sae_manage_check(sae=sae, by=by, action="delete it")
    with transaction.atomic():
        # Runs before the SAE: the order a merge publishing locks them in.
        _runs_unfinished_cancel(sae, message=f"Cancelled by {by.username}, who deleted the SAE.")
        removable = _files_removable(sae)
        _, counts = Sae.objects.filter(pk=sae.pk).delete()

        def files_delete() -> None:
            for path in removable:
                shutil.rmtree(path, ignore_errors=True)

        transaction.on_commit(files_delete)
    return SaeDeleted(runs=counts.get("saes.DashboardRun", 0), features=counts.get("features.Feature", 0),
                      explanations=counts.get("explanations.Explanation", 0))


# Vectors' dashboards (issue 13): a set of stored vectors of one hook, written as a linear SAE whose feature i fires
# relu(h·w_i + b_i) (workers.compute.vector_sae), stored and run exactly as an upload is.

# At most this many vectors in one set, which keeps the SAE's id within its 100 characters.
VECTOR_SET_MAX = 8


class VectorDashboardRefused(SaeActionRefused):
    """A dashboard of vectors that cannot be computed as asked; the message names the field and what to send."""


def vector_dashboard_start(*, vectors: Sequence[Vector], dataset: Dataset, owner: User,
                           biases: Sequence[float] | None = None, params: RunParams = RunParams()) -> Sae:
    """Store the vectors (each the owner's, or the owner staff) as an SAE `<layer>-vectors-<ids>-dash` and queue its
    dashboard run on dataset; the biases default to 0. Nothing stays on failure."""
    _vector_set_check(vectors)
    for vector in vectors:
        if not vector_may_manage(vector, owner):
            raise SaeActionForbidden(f"Only {vector.owner.username}, who made {vector}, or staff may compute its "
                                     "dashboard; use their login or API key, or ask staff.")
    first = vectors[0]
    language_model = first.language_model
    biases = [0.0] * len(vectors) if biases is None else list(biases)
    _vector_dashboard_inputs_check(language_model, dataset, biases, len(vectors), params)
    slug = vector_dashboard_slug(first.layer, [vector.pk for vector in vectors])
    if Sae.objects.filter(language_model=language_model, slug=slug).exists():
        raise _vector_dashboard_exists(language_model, slug)
    media = Path(settings.MEDIA_ROOT)
    staging = media / "staging" / uuid.uuid4().hex
    try:
        cfg = vector_sae_write(staging, [VectorInSae(id=vector.pk, label=vector.label, values=vector.values_array(),
                                                     bias=bias) for vector, bias in zip(vectors, biases, strict=True)],
                               hook_name=first.hook_name, model_name=language_model.slug)
        description = f"Dashboard of vector{'s' if len(vectors) > 1 else ''} {', '.join(v.label for v in vectors)}"
        try:
            return _sae_store(staging, media, language_model, dataset, owner, sae_config_from_dict(cfg),
                              first.hook_name, slug, description, params)
        except SaeUploadError as error:  # only another request storing the same set first
            raise _vector_dashboard_exists(language_model, slug) from error
    except VectorSaeError as error:
        raise VectorDashboardRefused(f"'index': {error}; pick a non-zero vector.") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _vector_set_check(vectors: Sequence[Vector]) -> None:
    if not 1 <= len(vectors) <= VECTOR_SET_MAX:
        raise VectorDashboardRefused(f"A dashboard is of 1 to {VECTOR_SET_MAX} vectors; {len(vectors)} were given.")
    if len({vector.pk for vector in vectors}) != len(vectors):
        raise VectorDashboardRefused("The vectors of a dashboard must differ; each was given once only.")
    first = vectors[0]
    for vector in vectors[1:]:
        if (vector.language_model_id, vector.hook_name) != (first.language_model_id, first.hook_name):
            raise VectorDashboardRefused(f"{vector} is at {vector.language_model.slug} {vector.hook_name}, but {first} "
                                         f"at {first.language_model.slug} {first.hook_name}; a set shares one hook.")


def _vector_dashboard_inputs_check(language_model: LanguageModel, dataset: Dataset, biases: Sequence[float],
                                   n_vectors: int, params: RunParams) -> None:
    if dataset.language_model_id != language_model.pk:
        others = ", ".join(Dataset.objects.filter(language_model=language_model).values_list("slug", flat=True))
        raise VectorDashboardRefused(
            f"'datasetId': dataset '{dataset.slug}' was tokenized for {dataset.language_model.slug}, not "
            f"{language_model.slug}; choose one of {language_model.slug}'s datasets ({others or 'it has none yet'}).")
    if len(biases) != n_vectors or not all(math.isfinite(bias) for bias in biases):
        raise VectorDashboardRefused(f"'biases': give {n_vectors} finite number{'s' if n_vectors > 1 else ''}, one "
                                     f"per vector, or none for 0; got {list(biases)}.")
    try:
        _check_run_params(language_model, dataset, params)
    except SaeUploadError as error:
        raise VectorDashboardRefused(f"'{error.field}': {error.message}") from error


def _vector_dashboard_exists(language_model: LanguageModel, slug: str) -> SaeActionConflict:
    return SaeActionConflict(f"{language_model.slug}/{slug} holds this dashboard already; its page shows it, can run "
                             "it again, or delete it so that another can be computed.")


# A published run's anomaly distribution: queued by the publish, computed by its own task, so that its failure
# never touches the dashboards. No heartbeat: a worker that dies mid-step leaves it running until the broker hands
# the task out again, and a try then starts over (it writes nothing until it stores the tables).


def run_anomaly_distribution_queue(*, run_id: int) -> None:
    """Record the run's distribution as to compute and queue its task once the caller's transaction (the publish)
    commits; a run published again computes it again, as its densities may have changed."""
    RunAnomalyDistribution.objects.update_or_create(
        run_id=run_id, defaults={"status": RunAnomalyDistribution.Status.QUEUED, "attempts": 0, "error": ""})
    queue = settings.ATLAS_GPU_QUEUE
    transaction.on_commit(lambda: celery_app.send_task(ANOMALY_TASK, args=[run_id], queue=queue))


def run_anomaly_distribution_start(*, run_id: int) -> RunAnomalyDistribution | None:
    """Record another try, counted in `attempts`; None when there is nothing to compute (done with, or gone)."""
    with transaction.atomic():
        current = RunAnomalyDistribution.objects.select_for_update().filter(run_id=run_id).first()
        if current is None or current.status in FINISHED_STATUSES:
            return None
        current.attempts += 1
        current.status = RunAnomalyDistribution.Status.RUNNING
        current.save(update_fields=["attempts", "status"])
    return current


def run_anomaly_distribution_store(*, distribution: RunAnomalyDistribution, n_sequences: int, n_tokens: int,
                                   reconstruction_error_quantiles: list[float],
                                   rarity_quantiles: list[float]) -> None:
    RunAnomalyDistribution.objects.filter(pk=distribution.pk).update(
        status=RunAnomalyDistribution.Status.SUCCEEDED, error="", finished=timezone.now(), n_sequences=n_sequences,
        n_tokens=n_tokens, reconstruction_error_quantiles=reconstruction_error_quantiles,
        rarity_quantiles=rarity_quantiles,
    )


def run_anomaly_distribution_requeue(*, distribution: RunAnomalyDistribution, message: str) -> None:
    RunAnomalyDistribution.objects.filter(pk=distribution.pk).update(
        status=RunAnomalyDistribution.Status.QUEUED, error=message)


def run_anomaly_distribution_fail(*, distribution: RunAnomalyDistribution, message: str) -> None:
    """Failed for good: live answers say their percentiles are unknown, and why."""
    RunAnomalyDistribution.objects.filter(pk=distribution.pk).update(
        status=RunAnomalyDistribution.Status.FAILED, error=message, finished=timezone.now())
