"""Writes for SAEs: store an upload and queue its run, then record how the run's shards, merge and metrics go."""

from __future__ import annotations

import math
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from atlas.celery import app as celery_app
from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.archives import ArchiveError, sae_archive_unpack
from atlas.saes.models import DashboardRun, DashboardShard, RunMetrics, Sae
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
    sae_files_check,
)
from workers.compute.sae_release import sae_release_fetch

SHARD_TASK = "workers.tasks.dashboard_shard_execute"
METRICS_TASK = "workers.tasks.dashboard_run_metrics"
MERGE_TASK = "workers.tasks.dashboard_run_merge"
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
    """Copy an upload to target chunk by chunk, counting, so a file over the limit is never kept or held whole."""
    limit = settings.ATLAS_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise _too_large(upload.name, upload.size, field)
    written = 0
    with open(target, "wb") as out:
        for chunk in upload.chunks():
            written += len(chunk)
            if written > limit:
                raise _too_large(upload.name, written, field)
            out.write(chunk)


def _is_dictionary_learning(weights_file: File[bytes]) -> bool:
    return (weights_file.name or "").lower().endswith((".pt", ".pth"))


def _stage_files(
    staging: Path,
    cfg_file: File[bytes] | None,
    weights_file: File[bytes] | None,
    archive: File[bytes] | None,
) -> None:
    if archive is not None:
        packed = staging / "upload.archive"
        _save_upload(archive, packed, "archive")
        try:
            sae_archive_unpack(packed, archive.name or "archive", staging, settings.ATLAS_MAX_UPLOAD_BYTES)
        except ArchiveError as error:
            raise SaeUploadError(str(error), "archive") from error
        finally:
            packed.unlink(missing_ok=True)
        return
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


def _checked_config(staging: Path) -> SaeConfig:
    """Every check of the files, values included, made here without torch: the web process never imports it."""
    try:
        return sae_files_check(staging)
    except SaeFormatError as error:
        raise SaeUploadError(str(error), _FIELD_OF_FILE.get(error.filename or "")) from error


def _checked_hook(language_model: LanguageModel, config: SaeConfig, hook_name: str) -> str:
    hook = hook_name.strip() or (config.hook_name or "")
    if not hook:
        raise SaeUploadError("cfg.json names no hook point; enter one, e.g. blocks.5.hook_resid_post.", "hook_name")
    width = language_model.hook_widths.get(hook)
    if width is None:
        example = next(iter(sorted(language_model.hook_widths)), "blocks.0.hook_resid_post")
        raise SaeUploadError(
            f"{language_model.slug} has no hook named '{hook}'; hook names look like {example}.", "hook_name"
        )
    if width != config.d_in:
        raise SaeUploadError(
            f"W_enc is [{config.d_in}, {config.d_sae}] but the model's {hook} has width {width}.", "weights_file"
        )
    return hook


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
        _stage_files(staging, cfg_file, weights_file, archive)
        config = _checked_config(staging)
        hook = _checked_hook(language_model, config, hook_name)
        _check_run_params(language_model, dataset, params)
        slug = slug.strip() or sae_default_slug(hook, config.d_sae)
        if Sae.objects.filter(language_model=language_model, slug=slug).exists():
            raise _duplicate_id(language_model, slug)
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


def shard_start(*, shard: DashboardShard, device: str) -> int:
    """Record another try at the shard on device, and its run as running if it was still queued; returns the
    try's number (a redelivery after a worker died counts as a try too)."""
    attempt = shard.attempts + 1
    with transaction.atomic():
        DashboardShard.objects.filter(pk=shard.pk).update(
            status=DashboardShard.Status.RUNNING, attempts=attempt, device=device
        )
        DashboardRun.objects.filter(pk=shard.run_id, status=DashboardRun.Status.QUEUED).update(
            status=DashboardRun.Status.RUNNING, started=timezone.now(), device=device
        )
    return attempt


def shard_progress_write(*, shard: DashboardShard, phase: str, done: int) -> None:
    """The shard's tokens done, and the run's: the sum over its shards, so the run's bar covers them all."""
    DashboardShard.objects.filter(pk=shard.pk).update(progress_done=done)
    done_in_run = DashboardShard.objects.filter(run_id=shard.run_id).aggregate(done=Sum("progress_done"))["done"]
    # Once the merge is queued the run's bar is the merge's, which a slow shard's last report must not undo.
    DashboardRun.objects.filter(pk=shard.run_id, merge_queued=False).update(
        phase=phase, progress_done=done_in_run or 0, progress_total=shard.run.tokens_total
    )


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
        DashboardShard.objects.filter(pk=shard.pk).update(status=DashboardShard.Status.FAILED, error=message)
        dashboard_run_fail(run_id=shard.run_id, message=message)


def dashboard_run_fail(*, run_id: int, message: str) -> None:
    """Fail the run with message, unless it has already succeeded (a late shard cannot undo a publish)."""
    DashboardRun.objects.filter(pk=run_id).exclude(status=DashboardRun.Status.SUCCEEDED).update(
        status=DashboardRun.Status.FAILED, error=message, finished=timezone.now()
    )


def dashboard_run_progress_write(*, run_id: int, phase: str, done: int, total: int) -> None:
    DashboardRun.objects.filter(pk=run_id).update(phase=phase, progress_done=done, progress_total=total)


def dashboard_run_merge_queue(*, run_id: int, again: bool = False) -> None:
    """Queue the merge once every shard has succeeded, exactly once: the run's row is locked while it is decided,
    so two shards finishing together cannot both queue it. `again` queues it even if it was queued before, for a
    finished shard delivered again (its worker may have died before the merge task was sent)."""
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


def run_metrics_start(*, run: DashboardRun, attempt: int, device: str) -> RunMetrics | None:
    """Record a try at the run's metrics on device; None when they are already computed."""
    metrics, _ = RunMetrics.objects.get_or_create(run=run)
    if metrics.status == RunMetrics.Status.SUCCEEDED:
        return None
    RunMetrics.objects.filter(pk=metrics.pk).update(status=RunMetrics.Status.RUNNING, attempts=attempt, device=device)
    return metrics


def run_metrics_store(*, metrics: RunMetrics, computed: SaeMetrics) -> None:
    # A score whose denominator is zero is NaN, which JSON cannot carry: it is stored as unknown.
    values = {name: None if isinstance(value, float) and not math.isfinite(value) else value
              for name, value in asdict(computed).items()}
    RunMetrics.objects.filter(pk=metrics.pk).update(
        status=RunMetrics.Status.SUCCEEDED, error="", finished=timezone.now(), **values
    )


def run_metrics_requeue(*, metrics: RunMetrics, message: str) -> None:
    """A try failed and another will follow."""
    RunMetrics.objects.filter(pk=metrics.pk).update(status=RunMetrics.Status.QUEUED, error=message)


def run_metrics_fail(*, metrics: RunMetrics, message: str) -> None:
    """The metrics failed for good; the dashboards go on regardless, and the SAE page shows the message."""
    RunMetrics.objects.filter(pk=metrics.pk).update(
        status=RunMetrics.Status.FAILED, error=message, finished=timezone.now()
    )
