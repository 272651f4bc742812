"""Celery tasks: thin shells that call the worker-side services (atlas.saes.execution).

Services are imported when a task runs, after the Celery Django fixup has set Django up.
"""

from typing import Any

from celery import Task, shared_task


@shared_task(name="workers.tasks.dashboard_shard_execute", bind=True, max_retries=None)
def dashboard_shard_execute(self: Task[[int], None], shard_id: int) -> None:
    from atlas.saes.execution import TaskRetry, shard_execute

    try:
        shard_execute(shard_id)
    except TaskRetry as retry:
        raise self.retry(countdown=retry.countdown) from retry


@shared_task(name="workers.tasks.dashboard_run_merge", bind=True, max_retries=None)
def dashboard_run_merge(self: Task[[int], None], run_id: int) -> None:
    from atlas.saes.execution import TaskRetry, run_merge

    try:
        run_merge(run_id, attempt=self.request.retries + 1)
    except TaskRetry as retry:
        raise self.retry(countdown=retry.countdown) from retry


@shared_task(name="workers.tasks.dashboard_run_metrics", bind=True, max_retries=None)
def dashboard_run_metrics(self: Task[[int], None], run_id: int) -> None:
    from atlas.saes.execution import TaskRetry, run_metrics_execute

    try:
        run_metrics_execute(run_id, attempt=self.request.retries + 1)
    except TaskRetry as retry:
        raise self.retry(countdown=retry.countdown) from retry


# A request waits for this one: acknowledged on receipt, since nobody waits for a redelivery.
@shared_task(name="workers.tasks.text_activations", acks_late=False)
def text_activations(sae_id: int, text: str, feature: int | None, n_results: int) -> dict[str, Any]:
    from atlas.saes.execution import text_activations_compute

    return text_activations_compute(sae_id=sae_id, text=text, feature=feature, n_results=n_results)
