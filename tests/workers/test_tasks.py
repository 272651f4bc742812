"""The tasks' one retry policy, through Celery itself (run eagerly, in this process): a failing step is tried
ATLAS_TASK_ATTEMPTS times, ATLAS_TASK_RETRY_SECONDS apart, then recorded as failed; the live task is
acknowledged on receipt."""

from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.saes.models import DashboardRun, RunMetrics
from tests import factories
from workers import runs, tasks


@pytest.fixture
def run(logged_in_client: Client, dataset: Dataset, sae_dir: Path) -> DashboardRun:
    sae = factories.sae_upload_post(logged_in_client, dataset, factories.sae_upload_files(sae_dir))
    run: DashboardRun = sae.runs.get()
    return run


def _countdowns(task: Any, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The countdown of every retry the task asks Celery for."""
    asked: list[float] = []
    retry = task.retry

    def recorded(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs["countdown"])
        return retry(*args, **kwargs)

    monkeypatch.setattr(task, "retry", recorded)
    return asked


def test_a_failing_shard_is_retried_then_fails_the_run(run: DashboardRun, dataset: Dataset,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    countdowns = _countdowns(tasks.dashboard_shard_execute, monkeypatch)
    Path(dataset.tokens_path).unlink()
    shard = run.shards.get()
    tasks.dashboard_shard_execute.apply(args=[shard.pk])
    run.refresh_from_db()
    assert countdowns == [settings.ATLAS_TASK_RETRY_SECONDS] * (settings.ATLAS_TASK_ATTEMPTS - 1)
    assert run.shards.get().attempts == settings.ATLAS_TASK_ATTEMPTS
    assert run.status == DashboardRun.Status.FAILED
    assert run.error.startswith(f"shard 1 of 1 (sequences 0-11) failed after {settings.ATLAS_TASK_ATTEMPTS} attempts")


def test_failing_metrics_are_retried_then_recorded_and_the_run_goes_on(run: DashboardRun,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(runs, "sae_metrics", broken)
    countdowns = _countdowns(tasks.dashboard_run_metrics, monkeypatch)
    tasks.dashboard_run_metrics.apply(args=[run.pk])
    metrics = RunMetrics.objects.get(run=run)
    assert len(countdowns) == settings.ATLAS_TASK_ATTEMPTS - 1
    assert (metrics.status, metrics.attempts) == (RunMetrics.Status.FAILED, settings.ATLAS_TASK_ATTEMPTS)
    assert metrics.error.endswith("RuntimeError: out of memory")
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.QUEUED  # the dashboards do not depend on the metrics


def test_a_bad_sae_file_is_not_retried(run: DashboardRun, monkeypatch: pytest.MonkeyPatch) -> None:
    countdowns = _countdowns(tasks.dashboard_shard_execute, monkeypatch)
    (run.sae.files_path / "sae_weights.safetensors").write_bytes(b"\x00corrupt")
    tasks.dashboard_shard_execute.apply(args=[run.shards.get().pk])
    run.refresh_from_db()
    assert (countdowns, run.status) == ([], DashboardRun.Status.FAILED)


def test_run_steps_are_acknowledged_late_and_the_live_task_on_receipt() -> None:
    steps = (tasks.dashboard_shard_execute, tasks.dashboard_run_merge, tasks.dashboard_run_metrics)
    assert all(step.acks_late for step in steps)
    assert not tasks.text_activations.acks_late
