"""Celery tasks: thin shells over the worker's steps (workers.runs, workers.live), queued by name from the web;
and the recovery sweep each worker process runs beside them.

The steps are imported when a task runs, after the Celery Django fixup has set Django up.
"""

from typing import Any

from celery import shared_task, signals
from django.conf import settings

from workers.attempts import RetryLater
from workers.compute.steer_types import SteerRefusal, SteerRequest, SteerResponse

# The one retry policy of a run's steps (workers.attempts): a step raises RetryLater while tries are left, and
# counts them itself in its row (a redelivered or recovered task is a try Celery does not count), so Celery's
# own limit is off. The countdown is read when the worker imports its tasks, from the environment it was started
# with.
RUN_STEP: dict[str, Any] = {
    "autoretry_for": (RetryLater,),
    "max_retries": None,
    "retry_backoff": False,
    "retry_kwargs": {"countdown": settings.ATLAS_TASK_RETRY_SECONDS},
}


@shared_task(name="workers.tasks.dashboard_shard_execute", **RUN_STEP)
def dashboard_shard_execute(shard_id: int) -> None:
    from workers.runs import shard_execute

    shard_execute(shard_id)


@shared_task(name="workers.tasks.dashboard_run_merge", **RUN_STEP)
def dashboard_run_merge(run_id: int) -> None:
    from workers.runs import run_merge

    run_merge(run_id)


@shared_task(name="workers.tasks.dashboard_run_metrics", **RUN_STEP)
def dashboard_run_metrics(run_id: int) -> None:
    from workers.runs import run_metrics_execute

    run_metrics_execute(run_id)


@shared_task(name="workers.tasks.dashboard_run_anomaly_distribution", **RUN_STEP)
def dashboard_run_anomaly_distribution(run_id: int) -> None:
    from workers.anomaly import run_anomaly_distribution_execute

    run_anomaly_distribution_execute(run_id)


# A request waits for this one: acknowledged on receipt, since nobody waits for a redelivery.
@shared_task(name="workers.tasks.text_activations", acks_late=False)
def text_activations(sae_id: int, text: str, feature: int | None, n_results: int,
                     anomaly: bool = False) -> dict[str, Any]:
    from workers.live import text_activations_compute

    return text_activations_compute(sae_id=sae_id, text=text, feature=feature, n_results=n_results,
                                    anomaly=anomaly)


# Waited for as text_activations is, so acknowledged on receipt too.
@shared_task(name="workers.tasks.text_top_features_by_token", acks_late=False)
def text_top_features_by_token(sae_id: int, text: str, n_results: int) -> dict[str, Any]:
    from workers.live import top_features_by_token_compute

    return top_features_by_token_compute(sae_id=sae_id, text=text, n_results=n_results)


# Every worker process sweeps for steps whose worker died (workers.heartbeat): `make worker`, `make live-worker`,
# the compose services and the demo's workers all start it, with nothing else to run.
@signals.worker_ready.connect
def _recovery_sweep_start(**_: Any) -> None:
    from workers.heartbeat import sweeper_start

    sweeper_start()


@signals.worker_shutdown.connect
def _recovery_sweep_stop(**_: Any) -> None:
    from workers.heartbeat import sweeper_stop

    sweeper_stop()


# Sent to the live queue and waited for as text_activations is, so acknowledged on receipt too.
@shared_task(name="workers.tasks.steer_generate", acks_late=False)
def steer_generate(request: SteerRequest) -> SteerResponse | SteerRefusal:
    from workers.steer import steer_compute

    return steer_compute(request)


# Waited for as text_activations is: a concept search small enough to answer while the request waits.
@shared_task(name="workers.tasks.concept_search_live", acks_late=False)
def concept_search_live(request: dict[str, Any]) -> dict[str, Any]:
    from workers.concepts import concept_search_answer

    return concept_search_answer(request)


# A large concept search: a stored job on the gpu queue, its progress and result written to its row.
@shared_task(name="workers.tasks.concept_search_execute")
def concept_search_execute(search_id: str) -> None:
    from workers.concepts import concept_search_execute as execute

    execute(search_id)


# Waited for as text_activations is: a detector's scores of a few texts.
@shared_task(name="workers.tasks.detect_texts", acks_late=False)
def detect_texts(request: dict[str, Any]) -> dict[str, Any]:
    from workers.concepts import detect_answer

    return detect_answer(request)
