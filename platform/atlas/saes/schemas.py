"""The JSON shapes of SAEs' runs and uploads: progress per run and shard, quality metrics, an upload's answer."""

from datetime import datetime
from typing import Any, Self

from django.conf import settings
from django.utils import timezone
from pydantic import Field

from atlas.jsonapi import ResponseSchema
from atlas.saes.models import DashboardRun, DashboardShard, Sae, TaskStatus
from atlas.saes.selectors import DENSE_FEATURE_FRACTION, RunMetricsView, run_metrics_view, run_shards


class RunMetricsOut(ResponseSchema):
    """The run's quality metrics under camelCase names, as Neuronpedia's API writes its fields; each is null until
    computed (status null: a run recorded before metrics existed)."""

    status: TaskStatus | None
    error: str
    sequences: int | None
    tokens: int | None
    l0: float | None
    explained_variance: float | None = Field(serialization_alias="explainedVariance")
    mse: float | None
    cosine_similarity: float | None = Field(serialization_alias="cosineSimilarity")
    ce_loss_score: float | None = Field(serialization_alias="ceLossScore")
    ce_loss_clean: float | None = Field(serialization_alias="ceLossClean")
    ce_loss_with_sae: float | None = Field(serialization_alias="ceLossWithSae")
    ce_loss_zero_ablation: float | None = Field(serialization_alias="ceLossZeroAblation")
    kl_div_score: float | None = Field(serialization_alias="klDivScore")
    kl_div_with_sae: float | None = Field(serialization_alias="klDivWithSae")
    kl_div_zero_ablation: float | None = Field(serialization_alias="klDivZeroAblation")
    dead_features: int | None = Field(serialization_alias="deadFeatures",
                                      description="features never active on the run's tokens")
    dense_features: int | None = Field(serialization_alias="denseFeatures",
                                       description="features active on more than denseThreshold of them")
    dense_threshold: float = Field(serialization_alias="denseThreshold")

    @classmethod
    def from_view(cls, view: RunMetricsView) -> Self:
        metrics, counts = view.metrics, view.feature_counts
        computed = {name: getattr(metrics, name) if metrics else None for name in _COMPUTED_METRICS}
        return cls(
            status=TaskStatus(metrics.status) if metrics else None,
            error=metrics.error if metrics else "",
            sequences=metrics.n_sequences if metrics else None,
            tokens=metrics.n_tokens if metrics else None,
            **computed,
            dead_features=counts.dead if counts else None,
            dense_features=counts.dense if counts else None,
            dense_threshold=DENSE_FEATURE_FRACTION,
        )


# RunMetricsOut's fields that are RunMetrics columns of the same name.
_COMPUTED_METRICS = ("l0", "explained_variance", "mse", "cosine_similarity", "ce_loss_score", "ce_loss_clean",
                     "ce_loss_with_sae", "ce_loss_zero_ablation", "kl_div_score", "kl_div_with_sae",
                     "kl_div_zero_ablation")


class ShardOut(ResponseSchema):
    index: int
    first_sequence: int = Field(serialization_alias="firstSequence")
    sequences: int
    status: TaskStatus
    attempts: int
    progress_done: int = Field(serialization_alias="progressDone")
    device: str
    error: str
    worker: str = Field(description="the Celery worker (name@host) that computes or last computed the shard")
    heartbeat: str | None = Field(json_schema_extra={"format": "date-time"},
                                  description="when that worker last said it was alive")
    silent_seconds: int | None = Field(
        serialization_alias="silentSeconds",
        description="seconds without a heartbeat, while the shard is running and they are more than "
                    "ATLAS_SHARD_STALE_SECONDS (its worker has probably died; a sweep hands it to another); else null",
    )

    @classmethod
    def from_shard(cls, shard: DashboardShard, now: datetime) -> Self:
        return cls(index=shard.index, first_sequence=shard.first_seq, sequences=shard.n_seqs,
                   status=TaskStatus(shard.status), attempts=shard.attempts, progress_done=shard.progress_done,
                   device=shard.device, error=shard.error, worker=shard.worker,
                   heartbeat=_isoformat(shard.heartbeat), silent_seconds=_silent_seconds(shard, now))


def _silent_seconds(shard: DashboardShard, now: datetime) -> int | None:
    if shard.status != TaskStatus.RUNNING or shard.heartbeat is None:
        return None
    silent = (now - shard.heartbeat).total_seconds()
    return round(silent) if silent > settings.ATLAS_SHARD_STALE_SECONDS else None


class RunEventOut(ResponseSchema):
    """Something that happened to the run, such as a worker that stopped and the shard handed to another."""

    at: str = Field(json_schema_extra={"format": "date-time"})
    message: str

    @classmethod
    def from_json(cls, event: dict[str, Any]) -> Self:
        return cls(at=str(event.get("at", "")), message=str(event.get("message", "")))


class RunOut(ResponseSchema):
    """A dashboard run's status and progress (in tokens), and each shard's."""

    id: int
    status: TaskStatus
    phase: str
    progress_done: int = Field(serialization_alias="progressDone")
    progress_total: int = Field(serialization_alias="progressTotal")
    tokens_total: int = Field(serialization_alias="tokensTotal")
    device: str
    error: str
    # ISO 8601 as datetime.isoformat() writes it.
    created: str = Field(json_schema_extra={"format": "date-time"})
    started: str | None = Field(json_schema_extra={"format": "date-time"})
    finished: str | None = Field(json_schema_extra={"format": "date-time"})
    shards: list[ShardOut]
    events: list[RunEventOut] = Field(description="oldest first")
    metrics: RunMetricsOut

    @classmethod
    def from_run(cls, run: DashboardRun) -> Self:
        now = timezone.now()
        return cls(
            id=run.pk, status=TaskStatus(run.status), phase=run.phase, progress_done=run.progress_done,
            progress_total=run.progress_total, tokens_total=run.tokens_total, device=run.device, error=run.error,
            created=run.created.isoformat(), started=_isoformat(run.started), finished=_isoformat(run.finished),
            shards=[ShardOut.from_shard(shard, now) for shard in run_shards(run)],
            events=[RunEventOut.from_json(event) for event in run.events],
            metrics=RunMetricsOut.from_view(run_metrics_view(run)),
        )


def _isoformat(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


class UploadOut(ResponseSchema):
    """Where the stored SAE and its queued run can be followed."""

    model_id: str = Field(serialization_alias="modelId")
    layer: str = Field(description="the SAE id")
    run_id: int = Field(serialization_alias="runId")
    run: str = Field(description="the run's progress: GET it")
    url: str = Field(description="the SAE's page")

    @classmethod
    def from_sae(cls, sae: Sae, run: DashboardRun, *, run_url: str, page_url: str) -> Self:
        return cls(model_id=sae.language_model.slug, layer=sae.slug, run_id=run.pk, run=run_url, url=page_url)
