"""Cancelling, re-running and deleting an SAE while real workers compute it: the worker stops mid-shard and ends
the task quietly (no retry, no failure), nothing of the run is published, and a re-run publishes in its place."""

import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import AbstractUser
from django.test import Client

from atlas.accounts.services import api_key_create
from atlas.datasets.models import Dataset
from atlas.features.models import Feature
from atlas.saes.models import DashboardRun, DashboardShard, RunMetrics, Sae
from atlas.saes.services import dashboard_run_cancel, run_files_path
from tests import factories
from tests.support.workers import Workers
from workers import runs

# One shard of six batches of 4 sequences: a worker slowed to a second a batch is caught after its first.
N_SEQUENCES, BATCH_SIZE = 24, 4


def _setup(settings: Any, tmp_path: Path) -> tuple[Dataset, Path, AbstractUser, str]:
    settings.ATLAS_RUN_BATCH_SIZE, settings.ATLAS_SHARD_SEQUENCES = BATCH_SIZE, N_SEQUENCES
    language_model = factories.language_model_make()
    dataset = factories.dataset_make(language_model, n_sequences=N_SEQUENCES)
    sae_dir = factories.sae_lens_write(tmp_path / "sae", d_in=language_model.d_model)
    owner = factories.user_make("olga")
    return dataset, sae_dir, owner, api_key_create(user=owner).secret


def _mid_shard(sae: Sae, workers: Workers) -> DashboardShard:
    """The SAE's shard once its worker has reported a batch."""
    deadline = time.monotonic() + factories.RUN_TIMEOUT_SECONDS
    while True:
        shard = DashboardShard.objects.filter(run__sae=sae, status=DashboardShard.Status.RUNNING,
                                              progress_done__gt=0).first()
        if shard is not None:
            return shard
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.05)


def _succeeded(run: DashboardRun, workers: Workers) -> DashboardRun:
    run = factories.run_wait(run, logs=workers.logs)
    assert run.status == DashboardRun.Status.SUCCEEDED, run.error
    return run


def _after_everything_queued_so_far(dataset: Dataset, sae_dir: Path, owner: AbstractUser,
                                    workers: Workers) -> Sae:
    """Another SAE computed to the end: one solo worker takes tasks in order, so every task queued before its
    tasks has run by then."""
    later = factories.sae_upload_post(_client(owner), dataset, factories.sae_upload_files(sae_dir), slug="later")
    _succeeded(later.runs.get(), workers)
    return later


def _client(user: AbstractUser) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_cancelled_run_stops_its_worker_mid_shard_and_publishes_nothing(
    workers: Workers, settings: Any, tmp_path: Path
) -> None:
    dataset, sae_dir, owner, key = _setup(settings, tmp_path)
    worker = workers.start(batch_sleep=1.0)
    sae = factories.sae_upload_post(_client(owner), dataset, factories.sae_upload_files(sae_dir), slug="cancelled")
    shard = _mid_shard(sae, workers)

    response = Client().post(f"/api/runs/{shard.run_id}/cancel", headers={"x-api-key": key})
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    _after_everything_queued_so_far(dataset, sae_dir, owner, workers)

    run = DashboardRun.objects.get(pk=shard.run_id)
    shard.refresh_from_db()
    sae.refresh_from_db()
    log = "".join(worker.log)
    assert f"run {run.pk} is finished or gone; shard {shard.pk} stopped" in log, workers.logs()
    assert run.status == DashboardRun.Status.CANCELLED and run.error == ""
    # Stopped where it was: neither finished, nor tried again, nor failed.
    assert (shard.status, shard.attempts, shard.error) == (DashboardShard.Status.CANCELLED, 1, "")
    assert 0 < shard.progress_done < shard.n_seqs * dataset.context_length
    assert "Retry in" not in log and "raised unexpected" not in log
    assert RunMetrics.objects.get(run=run).status == RunMetrics.Status.CANCELLED
    assert sae.published_run_id is None and not Feature.objects.filter(run=run).exists()
    assert not run_files_path(run.pk).exists()


def test_a_rerun_publishes_the_same_dashboards_again(workers: Workers, settings: Any, tmp_path: Path) -> None:
    dataset, sae_dir, owner, key = _setup(settings, tmp_path)
    workers.start()
    client = _client(owner)
    sae = factories.sae_upload_post(client, dataset, factories.sae_upload_files(sae_dir), slug="again")
    first = _succeeded(sae.runs.get(), workers)
    before = [client.get(f"/api/feature/{dataset.language_model.slug}/{sae.slug}/{index}").json()
              for index in range(sae.d_sae)]

    response = Client().post(f"/api/sae/{dataset.language_model.slug}/{sae.slug}/rerun", headers={"x-api-key": key})
    assert response.status_code == 201, response.content
    again = _succeeded(DashboardRun.objects.get(pk=response.json()["id"]), workers)

    sae.refresh_from_db()
    assert sae.published_run_id == again.pk != first.pk
    assert Feature.objects.filter(run__sae=sae).count() == Feature.objects.filter(run=again).count() == sae.d_sae
    after = [client.get(f"/api/feature/{dataset.language_model.slug}/{sae.slug}/{index}").json()
             for index in range(sae.d_sae)]
    assert after == before


def test_an_sae_deleted_mid_shard_leaves_no_row_and_no_file(workers: Workers, settings: Any, tmp_path: Path,
                                                            media_root: Path) -> None:
    dataset, sae_dir, owner, key = _setup(settings, tmp_path)
    worker = workers.start(batch_sleep=1.0)
    files = factories.media_files(media_root)
    sae = factories.sae_upload_post(_client(owner), dataset, factories.sae_upload_files(sae_dir), slug="deleted")
    shard = _mid_shard(sae, workers)

    response = Client().delete(f"/api/sae/{dataset.language_model.slug}/{sae.slug}", headers={"x-api-key": key})
    assert response.status_code == 200 and response.json()["runs"] == 1
    later = _after_everything_queued_so_far(dataset, sae_dir, owner, workers)

    assert f"shard {shard.pk} stopped" in "".join(worker.log), workers.logs()
    assert not Sae.objects.filter(pk=sae.pk).exists() and not DashboardRun.objects.filter(pk=shard.run_id).exists()
    assert DashboardShard.objects.filter(run__sae=later).count() == DashboardShard.objects.count()
    later_files = {str(path.relative_to(media_root)) for path in later.files_path.rglob("*") if path.is_file()}
    assert factories.media_files(media_root) == files | later_files


@pytest.mark.django_db
def test_a_run_cancelled_while_it_merges_publishes_nothing(
    dataset: Dataset, sae_dir: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cancel lands after the merge's last progress report: the publish, which locks the run, still sees it."""
    settings.ATLAS_RUN_PROGRESS_SECONDS = 3600  # no report between the dashboards' last phase and the publish
    owner = factories.user_make("olga")
    sae = factories.sae_uploaded(dataset, sae_dir, owner=owner)
    run = sae.runs.get()
    for shard_id in run.shards.values_list("pk", flat=True):
        runs.shard_execute(shard_id)
    finish = runs.dashboards_finish

    def finish_then_cancel(*args: Any, **kwargs: Any) -> Any:
        dashboards = finish(*args, **kwargs)
        dashboard_run_cancel(run=run, by=owner)
        return dashboards

    monkeypatch.setattr(runs, "dashboards_finish", finish_then_cancel)
    runs.run_merge(run.pk, final=True)

    run.refresh_from_db()
    sae.refresh_from_db()
    assert run.status == DashboardRun.Status.CANCELLED
    assert sae.published_run_id is None and not Feature.objects.filter(run=run).exists()
