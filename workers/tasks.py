"""Celery tasks: thin shells that call the worker-side services."""

from celery import shared_task


@shared_task(name="workers.tasks.dashboard_run_execute")
def dashboard_run_execute(run_id: int) -> None:
    # Imported when a task runs, after the Celery Django fixup has set Django up.
    from atlas.saes.execution import dashboard_run_execute as execute

    execute(run_id)
