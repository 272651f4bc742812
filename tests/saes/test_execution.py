"""Shards that fail are tried again; a run fails, with a message that says where, only after the last try."""

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.execution import TaskRetry, run_merge, shard_execute
from atlas.saes.models import DashboardRun, DashboardShard
from atlas.saes.services import shard_ranges
from tests import factories


@pytest.fixture
def run(settings: Any, logged_in_client: Client, language_model: LanguageModel, dataset: Dataset,
        sae_dir: Path) -> DashboardRun:
    settings.ATLAS_RUN_BATCH_SIZE = 4
    settings.ATLAS_SHARD_SEQUENCES = 6  # 12 sequences: two shards of 8 and 4, on batch boundaries
    response = logged_in_client.post(
        "/upload/", {**factories.upload_form_data(language_model, dataset), **factories.sae_upload_files(sae_dir)}
    )
    assert response.status_code == 302
    return DashboardRun.objects.get()


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
    with pytest.raises(TaskRetry) as retry:
        shard_execute(shards[0].pk)
    assert "No such file" in str(retry.value)
    shards[0].refresh_from_db()
    assert (shards[0].status, shards[0].attempts) == (DashboardShard.Status.QUEUED, 1)

    hidden.rename(tokens)
    for shard in shards:
        shard_execute(shard.pk)
    run.refresh_from_db()
    assert run.merge_queued and run.status == DashboardRun.Status.RUNNING
    run_merge(run.pk, attempt=1)
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
        with pytest.raises(TaskRetry):
            shard_execute(shard.pk)
        run.refresh_from_db()
        assert run.status == DashboardRun.Status.RUNNING
    shard_execute(shard.pk)  # the third attempt gives up
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.FAILED
    assert run.error.startswith("shard 2 of 2 (sequences 8-11) failed after 3 attempts: FileNotFoundError")
    shard_execute(run.shards.get(index=0).pk)  # a failed run is not worked on any more
    assert run.shards.get(index=0).attempts == 0


def test_a_merge_that_fails_is_retried_then_fails_the_run(run: DashboardRun, settings: Any) -> None:
    for shard in run.shards.all():
        shard_execute(shard.pk)
    settings.ATLAS_TASK_ATTEMPTS = 2
    shard_file = next((Path(settings.MEDIA_ROOT) / "runs" / str(run.pk)).glob("shard-1/active_keys.npy"))
    shard_file.unlink()
    with pytest.raises(TaskRetry):
        run_merge(run.pk, attempt=1)
    run_merge(run.pk, attempt=2)
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.FAILED
    assert run.error.startswith("merging the shards failed after 2 attempts: FileNotFoundError")
    assert not run.features.exists()
