"""Writes for SAEs: check and store an upload, then queue its dashboard run on the GPU queue."""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth.models import User
from django.core.files import File
from django.db import IntegrityError, transaction

from atlas.celery import app as celery_app
from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.archives import ArchiveError, sae_archive_unpack
from atlas.saes.models import DashboardRun, DashboardShard, RunMetrics, Sae
from workers.compute.params import DashboardParams
from workers.compute.sae import CFG_FILENAME, WEIGHTS_FILENAME, SaeConfig, SaeFormatError, sae_check
from workers.compute.sae_release import sae_release_fetch

SHARD_TASK = "workers.tasks.dashboard_shard_execute"
METRICS_TASK = "workers.tasks.dashboard_run_metrics"
_LAYER = re.compile(r"blocks\.(\d+)\.")
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
    "cfg.json": "cfg_file",
    "config.json": "cfg_file",
    "sae_weights.safetensors": "weights_file",
    "ae.pt": "weights_file",
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
    cfg_name, weights_name = ("config.json", "ae.pt") if _is_dictionary_learning(weights_file) else (
        "cfg.json", "sae_weights.safetensors"
    )
    _save_upload(cfg_file, staging / cfg_name, "cfg_file")
    _save_upload(weights_file, staging / weights_name, "weights_file")


def _checked_config(staging: Path) -> SaeConfig:
    try:
        return sae_check(staging)
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


def _hook_layer(hook_name: str) -> int | None:
    match = _LAYER.search(hook_name)
    return int(match.group(1)) if match else None


def sae_default_slug(hook_name: str, d_sae: int) -> str:
    layer = _hook_layer(hook_name)
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
    run = DashboardRun.objects.create(
        sae=sae,
        dataset=dataset,
        n_sequences=n_sequences,
        top_k=params.top_k,
        context_before=params.context_before,
        context_after=params.context_after,
        tokens_total=n_sequences * dataset.context_length,
        progress_total=n_sequences * dataset.context_length,
        batch_size=settings.ATLAS_RUN_BATCH_SIZE,
    )
    shards = DashboardShard.objects.bulk_create(
        DashboardShard(run=run, index=index, first_seq=first, n_seqs=count)
        for index, (first, count) in enumerate(
            shard_ranges(n_sequences, settings.ATLAS_SHARD_SEQUENCES, settings.ATLAS_RUN_BATCH_SIZE)
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
                layer=_hook_layer(hook),
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
