"""Recovery from dead workers: a shard, merge or metrics whose heartbeat stopped is handed to another worker or,
its attempts spent, failed with a message, and the run's events say which; a fresh heartbeat is left alone, and a
late delivery of a step another worker computes changes nothing."""

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.db import connections, transaction
from django.test import Client
from django.utils import timezone

from atlas.datasets.models import Dataset
from atlas.saes import services
from atlas.saes.models import DashboardRun, DashboardShard, RunMetrics
from atlas.saes.services import MERGE_TASK, METRICS_TASK, SHARD_TASK, runs_recover
from tests import factories
from workers.heartbeat import heartbeat_kept, sweeper_start, sweeper_stop
from workers.runs import run_merge, run_metrics_execute, shard_execute

STALE_SECONDS = 120
DEAD = "runs@dead-host"
OTHER = "runs2@other-host"


@pytest.fixture(autouse=True)
def _recovery_settings(settings: Any) -> None:
    settings.ATLAS_SHARD_STALE_SECONDS = STALE_SECONDS
    settings.ATLAS_TASK_ATTEMPTS = 3


@pytest.fixture
def run(settings: Any, logged_in_client: Client, dataset: Dataset, sae_dir: Path) -> DashboardRun:
    settings.ATLAS_RUN_BATCH_SIZE = 4
    settings.ATLAS_SHARD_SEQUENCES = 6  # 12 sequences: two shards of 8 and 4
    sae = factories.sae_upload_post(logged_in_client, dataset, factories.sae_upload_files(sae_dir))
    run: DashboardRun = sae.runs.get()
    return run


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[int]]]:
    """The tasks sent, by name and arguments, instead of sending them."""
    tasks: list[tuple[str, list[int]]] = []
    monkeypatch.setattr("atlas.saes.services.celery_app.send_task",
                        lambda name, args, **_: tasks.append((name, list(args))))
    return tasks


def _recover(now: datetime, capture: Any) -> list[str]:
    with capture(execute=True):
        return runs_recover(now=now)


def _ago(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)


def _shard_running(run: DashboardRun, *, heartbeat: datetime, attempts: int = 1, worker: str = DEAD,
                   progress_done: int = 40) -> DashboardShard:
    shard = run.shards.get(index=1)
    DashboardShard.objects.filter(pk=shard.pk).update(status=DashboardShard.Status.RUNNING, attempts=attempts,
                                                      worker=worker, heartbeat=heartbeat, progress_done=progress_done)
    DashboardRun.objects.filter(pk=run.pk).update(status=DashboardRun.Status.RUNNING)
    shard.refresh_from_db()
    return shard


def _events(run: DashboardRun) -> list[str]:
    run.refresh_from_db()
    return [event["message"] for event in run.events]


def test_a_shard_whose_worker_stopped_is_queued_again_and_the_run_says_so(
    run: DashboardRun, sent: list[tuple[str, list[int]]], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    shard = _shard_running(run, heartbeat=_ago(now, STALE_SECONDS + 5))
    total = shard.n_seqs * run.dataset.context_length

    messages = _recover(now, django_capture_on_commit_callbacks)

    expected = (f"Shard 2 of 2: worker {DEAD} stopped reporting at 40 / {total} tokens (no heartbeat for "
                f"{STALE_SECONDS + 5} s); handed to another worker (attempt 2 of 3).")
    assert messages == [expected]
    assert _events(run) == [expected]
    assert run.events[0]["at"] == now.isoformat()
    shard.refresh_from_db()
    assert (shard.status, shard.attempts, shard.error) == (DashboardShard.Status.QUEUED, 1, expected)
    assert run.status == DashboardRun.Status.RUNNING
    assert sent == [(SHARD_TASK, [shard.pk])]


def test_a_shard_out_of_attempts_fails_the_run_with_a_message(
    run: DashboardRun, sent: list[tuple[str, list[int]]], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    shard = _shard_running(run, heartbeat=_ago(now, STALE_SECONDS + 1), attempts=3)

    _recover(now, django_capture_on_commit_callbacks)

    shard.refresh_from_db()
    run.refresh_from_db()
    assert shard.status == DashboardShard.Status.FAILED
    assert run.status == DashboardRun.Status.FAILED
    assert run.error.startswith(f"Shard 2 of 2: worker {DEAD} stopped reporting at 40 / ")
    assert "that was its last attempt (3 of 3). Look in the workers' logs" in run.error
    assert _events(run) == [run.error]
    assert sent == []


def test_a_fresh_heartbeat_and_a_finished_run_are_left_alone(
    run: DashboardRun, sent: list[tuple[str, list[int]]], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    shard = _shard_running(run, heartbeat=_ago(now, STALE_SECONDS - 1))
    assert _recover(now, django_capture_on_commit_callbacks) == []
    shard.refresh_from_db()
    assert shard.status == DashboardShard.Status.RUNNING

    DashboardRun.objects.filter(pk=run.pk).update(status=DashboardRun.Status.CANCELLED)
    assert _recover(now + timedelta(hours=1), django_capture_on_commit_callbacks) == []
    shard.refresh_from_db()
    assert shard.status == DashboardShard.Status.RUNNING
    assert (sent, _events(run)) == ([], [])


def _merging(run: DashboardRun, *, heartbeat: datetime, attempts: int = 1) -> None:
    DashboardShard.objects.filter(run=run).update(status=DashboardShard.Status.SUCCEEDED)
    DashboardRun.objects.filter(pk=run.pk).update(status=DashboardRun.Status.RUNNING, merge_queued=True,
                                                  merge_attempts=attempts, merge_worker=DEAD,
                                                  merge_heartbeat=heartbeat)


def test_a_merge_whose_worker_stopped_is_queued_again(
    run: DashboardRun, sent: list[tuple[str, list[int]]], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    _merging(run, heartbeat=_ago(now, STALE_SECONDS + 30))

    _recover(now, django_capture_on_commit_callbacks)

    assert _events(run) == [f"Merging the shards: worker {DEAD} stopped reporting (no heartbeat for "
                            f"{STALE_SECONDS + 30} s); handed to another worker (attempt 2 of 3)."]
    assert (run.status, run.merge_heartbeat) == (DashboardRun.Status.RUNNING, None)
    assert sent == [(MERGE_TASK, [run.pk])]


def test_a_merge_out_of_attempts_fails_the_run(
    run: DashboardRun, sent: list[tuple[str, list[int]]], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    _merging(run, heartbeat=_ago(now, STALE_SECONDS + 1), attempts=3)

    _recover(now, django_capture_on_commit_callbacks)

    run.refresh_from_db()
    assert run.status == DashboardRun.Status.FAILED
    assert run.error.startswith(f"Merging the shards: worker {DEAD} stopped reporting")
    assert "last attempt (3 of 3)" in run.error and sent == []


def _metrics_running(run: DashboardRun, *, heartbeat: datetime, attempts: int = 1) -> RunMetrics:
    RunMetrics.objects.filter(run=run).update(status=RunMetrics.Status.RUNNING, attempts=attempts, worker=DEAD,
                                              heartbeat=heartbeat)
    return RunMetrics.objects.get(run=run)


def test_metrics_whose_worker_stopped_are_queued_again_even_after_the_dashboards_succeeded(
    run: DashboardRun, sent: list[tuple[str, list[int]]], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    DashboardRun.objects.filter(pk=run.pk).update(status=DashboardRun.Status.SUCCEEDED)
    metrics = _metrics_running(run, heartbeat=_ago(now, STALE_SECONDS + 2))

    _recover(now, django_capture_on_commit_callbacks)

    metrics.refresh_from_db()
    assert metrics.status == RunMetrics.Status.QUEUED
    assert _events(run) == [f"Quality metrics: worker {DEAD} stopped reporting (no heartbeat for "
                            f"{STALE_SECONDS + 2} s); handed to another worker (attempt 2 of 3)."]
    assert sent == [(METRICS_TASK, [run.pk])]


def test_metrics_out_of_attempts_fail_alone(
    run: DashboardRun, sent: list[tuple[str, list[int]]], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    metrics = _metrics_running(run, heartbeat=_ago(now, STALE_SECONDS + 2), attempts=3)

    _recover(now, django_capture_on_commit_callbacks)

    metrics.refresh_from_db()
    run.refresh_from_db()
    assert metrics.status == RunMetrics.Status.FAILED
    assert metrics.error.startswith(f"Quality metrics: worker {DEAD} stopped reporting")
    assert run.status == DashboardRun.Status.QUEUED and sent == []


def test_the_worker_that_takes_a_recovered_shard_says_so_and_finishes_it(
    run: DashboardRun, sent: list[tuple[str, list[int]]], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    shard = _shard_running(run, heartbeat=_ago(now, STALE_SECONDS + 5))
    _recover(now, django_capture_on_commit_callbacks)

    shard_execute(shard.pk)

    shard.refresh_from_db()
    assert (shard.status, shard.attempts, shard.error) == (DashboardShard.Status.SUCCEEDED, 2, "")
    restarted = _events(run)[-1]
    assert restarted.startswith("Shard 2 of 2: restarted on ") and restarted.endswith("(attempt 2 of 3).")
    assert shard.worker in restarted


def test_a_late_delivery_of_a_shard_another_worker_computes_changes_nothing(run: DashboardRun) -> None:
    shard = _shard_running(run, heartbeat=timezone.now(), worker=OTHER)
    shard_execute(shard.pk)
    shard.refresh_from_db()
    assert (shard.status, shard.attempts, shard.worker) == (DashboardShard.Status.RUNNING, 1, OTHER)
    assert _events(run) == []


def test_a_late_delivery_of_a_merge_or_metrics_another_worker_computes_changes_nothing(
    run: DashboardRun, sent: list[tuple[str, list[int]]], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    _merging(run, heartbeat=now)
    DashboardRun.objects.filter(pk=run.pk).update(merge_worker=OTHER)
    metrics = _metrics_running(run, heartbeat=now)
    RunMetrics.objects.filter(pk=metrics.pk).update(worker=OTHER)

    run_merge(run.pk)
    run_metrics_execute(run.pk)
    with django_capture_on_commit_callbacks(execute=True):
        services.dashboard_run_merge_queue(run_id=run.pk, again=True)  # a finished shard delivered again

    run.refresh_from_db()
    metrics.refresh_from_db()
    assert (run.status, run.merge_attempts, run.merge_worker) == (DashboardRun.Status.RUNNING, 1, OTHER)
    assert (metrics.status, metrics.attempts) == (RunMetrics.Status.RUNNING, 1)
    assert sent == [] and run.events == []


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "not within 30 s"
        time.sleep(0.02)


@pytest.fixture
def fast_beats(settings: Any) -> Iterator[None]:
    settings.ATLAS_HEARTBEAT_SECONDS = 0.05
    settings.ATLAS_RECOVERY_SECONDS = 0.05
    yield


@pytest.mark.usefixtures("transactional_db", "fast_beats")
def test_a_step_beats_from_a_thread_of_its_own_until_it_ends(run: DashboardRun) -> None:
    old = timezone.now() - timedelta(hours=1)
    shard = _shard_running(run, heartbeat=old)
    threads: set[int] = set()

    def beat() -> None:
        threads.add(threading.get_ident())
        services.shard_heartbeat_write(shard_id=shard.pk, worker=DEAD)

    with heartbeat_kept(beat):
        _until(lambda: DashboardShard.objects.get(pk=shard.pk).heartbeat != old)
    assert threads and threading.get_ident() not in threads
    _until(lambda: not any(thread.ident in threads for thread in threading.enumerate()))  # stops with the block


@pytest.mark.usefixtures("transactional_db", "fast_beats")
def test_every_worker_sweeps_in_a_thread(run: DashboardRun, sent: list[tuple[str, list[int]]]) -> None:
    shard = _shard_running(run, heartbeat=timezone.now() - timedelta(hours=1))
    sweeper = sweeper_start()
    try:
        _until(lambda: DashboardShard.objects.get(pk=shard.pk).status == DashboardShard.Status.QUEUED)
    finally:
        sweeper_stop()
        sweeper.join()
    _until(lambda: sent == [(SHARD_TASK, [shard.pk])])


def test_the_run_json_and_the_sae_page_show_a_silent_shard_and_the_events(
    run: DashboardRun, sent: list[tuple[str, list[int]]], django_capture_on_commit_callbacks: Any
) -> None:
    now = timezone.now()
    shard = _shard_running(run, heartbeat=_ago(now, STALE_SECONDS + 30))
    fresh = run.shards.get(index=0)
    DashboardShard.objects.filter(pk=fresh.pk).update(status=DashboardShard.Status.RUNNING, worker=OTHER,
                                                      heartbeat=now)
    client = Client()

    silent = {entry["index"]: entry for entry in client.get(f"/api/runs/{run.pk}").json()["shards"]}
    assert (silent[1]["worker"], silent[1]["silentSeconds"] >= STALE_SECONDS + 30) == (DEAD, True)
    assert shard.heartbeat is not None and silent[1]["heartbeat"] == shard.heartbeat.isoformat()
    assert (silent[0]["worker"], silent[0]["silentSeconds"]) == (OTHER, None)

    [message] = _recover(now, django_capture_on_commit_callbacks)
    body = client.get(f"/api/runs/{run.pk}").json()
    assert body["events"] == [{"at": now.isoformat(), "message": message}]
    assert body["shards"][1]["silentSeconds"] is None  # queued again: nobody is late any more
    page = client.get(f"/{run.sae.language_model.slug}/{run.sae.slug}/").content.decode()
    assert f"Shard 2 of 2: worker {DEAD} stopped reporting" in page


@pytest.mark.usefixtures("transactional_db")
def test_a_shard_another_sweeper_holds_is_skipped_and_taken_by_the_next_sweep(
    run: DashboardRun, sent: list[tuple[str, list[int]]]
) -> None:
    now = timezone.now()
    shard = _shard_running(run, heartbeat=_ago(now, STALE_SECONDS + 5))
    held, release = threading.Event(), threading.Event()

    def other_sweeper() -> None:
        try:
            with transaction.atomic():
                DashboardRun.objects.select_for_update().get(pk=run.pk)
                held.set()
                release.wait()
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_sweeper)
    thread.start()
    held.wait()
    try:
        assert runs_recover(now=now) == []  # SKIP LOCKED: no waiting on the other
    finally:
        release.set()
        thread.join()
    shard.refresh_from_db()
    assert shard.status == DashboardShard.Status.RUNNING
    assert len(runs_recover(now=now)) == 1
    shard.refresh_from_db()
    assert shard.status == DashboardShard.Status.QUEUED and sent == [(SHARD_TASK, [shard.pk])]
