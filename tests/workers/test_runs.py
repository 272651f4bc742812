"""A run's steps on a worker: shards that fail are tried again, a run fails with a message that says where only
after the last try, the merge is queued exactly once, and the dashboards use the parameters the run stored."""

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.features.packing import dashboard_unpack
from atlas.saes.models import DashboardRun, DashboardShard
from atlas.saes.services import MERGE_TASK, dashboard_run_merge_queue, shard_ranges
from tests import factories
from workers.attempts import RetryLater
from workers.runs import dashboard_run_execute, run_merge, shard_execute


@pytest.fixture
def run(settings: Any, logged_in_client: Client, dataset: Dataset, sae_dir: Path) -> DashboardRun:
    settings.ATLAS_RUN_BATCH_SIZE = 4
    settings.ATLAS_SHARD_SEQUENCES = 6  # 12 sequences: two shards of 8 and 4, on batch boundaries
    sae = factories.sae_upload_post(logged_in_client, dataset, factories.sae_upload_files(sae_dir))
    run: DashboardRun = sae.runs.get()
    return run


def _merges_queued(callbacks: list[Any], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the captured on-commit callbacks with send_task recorded instead of sent; the task names sent."""
    sent: list[str] = []
    monkeypatch.setattr("atlas.saes.services.celery_app.send_task", lambda name, **_: sent.append(name))
    for callback in callbacks:
        callback()
    return [name for name in sent if name == MERGE_TASK]


def test_shards_start_on_batch_boundaries() -> None:
    assert shard_ranges(24, 8, 4) == [(0, 8), (8, 8), (16, 8)]
    assert shard_ranges(12, 6, 4) == [(0, 8), (8, 4)]
    assert shard_ranges(5, 1, 4) == [(0, 4), (4, 1)]
    assert shard_ranges(3, 100, 4) == [(0, 3)]


def test_a_shard_that_fails_once_is_retried_and_the_run_completes(run: DashboardRun, dataset: Dataset) -> None:
    shards = list(run.shards.order_by("index"))
    assert [(shard.first_seq, shard.n_seqs) for shard in shards] == [(0, 8), (8, 4)]
    tokens = Path(dataset.tokens_path)
    hidden = tokens.rename(tokens.with_suffix(".hidden"))
    with pytest.raises(RetryLater, match="No such file"):
        shard_execute(shards[0].pk)
    shards[0].refresh_from_db()
    assert (shards[0].status, shards[0].attempts) == (DashboardShard.Status.QUEUED, 1)
    assert "No such file" in shards[0].error

    hidden.rename(tokens)
    for shard in shards:
        shard_execute(shard.pk)
    run.refresh_from_db()
    assert run.merge_queued and run.status == DashboardRun.Status.RUNNING
    run_merge(run.pk)
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.SUCCEEDED, run.error
    assert run.features.count() == run.sae.d_sae
    shards[0].refresh_from_db()
    assert shards[0].attempts == 2


def test_a_run_fails_with_a_readable_error_only_after_the_last_attempt(
    run: DashboardRun, dataset: Dataset, settings: Any
) -> None:
    settings.ATLAS_TASK_ATTEMPTS = 3
    shard = run.shards.get(index=1)
    Path(dataset.tokens_path).unlink()
    for _ in range(2):
        with pytest.raises(RetryLater):
            shard_execute(shard.pk)
        run.refresh_from_db()
        assert run.status == DashboardRun.Status.RUNNING
    shard_execute(shard.pk)  # the third attempt gives up
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.FAILED
    assert run.error.startswith("shard 2 of 2 (sequences 8-11) failed after 3 attempts: FileNotFoundError")
    assert run.shards.get(index=1).status == DashboardShard.Status.FAILED
    shard_execute(run.shards.get(index=0).pk)  # a failed run is not worked on any more
    assert run.shards.get(index=0).attempts == 0


def test_a_bad_sae_file_fails_the_run_at_once(run: DashboardRun) -> None:
    (run.sae.files_path / "sae_weights.safetensors").write_bytes(b"\x00corrupt")
    shard_execute(run.shards.get(index=0).pk)  # no RetryLater: trying again cannot help
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.FAILED
    assert "sae_weights.safetensors is not a safetensors file" in run.error
    assert run.shards.get(index=0).attempts == 1


def test_a_merge_that_fails_is_retried_then_fails_the_run(run: DashboardRun, settings: Any) -> None:
    for shard in run.shards.all():
        shard_execute(shard.pk)
    settings.ATLAS_TASK_ATTEMPTS = 2
    shard_file = next((Path(settings.MEDIA_ROOT) / "runs" / str(run.pk)).glob("shard-1/active_keys.npy"))
    shard_file.unlink()
    with pytest.raises(RetryLater):
        run_merge(run.pk)
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.RUNNING
    run_merge(run.pk)
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.FAILED
    assert run.error.startswith("merging the shards failed after 2 attempts: FileNotFoundError")
    assert not run.features.exists()


def test_the_last_shard_queues_the_merge_once_and_a_redelivered_one_again(
    run: DashboardRun, django_capture_on_commit_callbacks: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, last = run.shards.order_by("index")
    with django_capture_on_commit_callbacks() as callbacks:
        shard_execute(first.pk)
    assert _merges_queued(callbacks, monkeypatch) == []  # a shard is still to come
    with django_capture_on_commit_callbacks() as callbacks:
        shard_execute(last.pk)
        dashboard_run_merge_queue(run_id=run.pk)  # as a shard finishing at the same moment would ask
    assert _merges_queued(callbacks, monkeypatch) == [MERGE_TASK]
    with django_capture_on_commit_callbacks() as callbacks:
        shard_execute(first.pk)  # delivered again after it finished: its worker may have died before the merge
    assert _merges_queued(callbacks, monkeypatch) == [MERGE_TASK]
    assert run.shards.get(pk=first.pk).attempts == 1  # nothing computed again


def test_the_dashboards_use_the_parameters_the_run_stored(run: DashboardRun) -> None:
    stored = run.dashboard_params
    assert (stored.top_k, stored.context_before, stored.context_after, stored.batch_size) == (5, 6, 2, 4)
    DashboardRun.objects.filter(pk=run.pk).update(params={**run.params, "top_k": 3, "n_intervals": 2})
    dashboard_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.SUCCEEDED, run.error
    busiest = run.features.order_by("-frac_nonzero").first()
    assert busiest is not None
    dashboard = dashboard_unpack(bytes(busiest.dashboard))
    assert (len(dashboard.top), len(dashboard.intervals)) == (3, 2)
    assert max(len(example.token_ids) for example in dashboard.top) == 6 + 1 + 2
