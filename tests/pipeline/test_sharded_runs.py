"""Sharded runs on several real worker processes: the same results as one shard, even when a worker dies mid-shard
or mid-merge and the recovery sweep of another hands its step on."""

import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.test import Client

from atlas.datasets.models import Dataset
from atlas.features.models import Feature
from atlas.saes.models import DashboardRun, DashboardShard, Sae
from tests import factories
from tests.support.workers import STALE_SECONDS, Worker, Workers

# 24 sequences in batches of 4: shards of 8 sequences make three shards, of 100 one.
N_SEQUENCES, BATCH_SIZE, SHARD_SEQUENCES = 24, 4, 8


def _succeeded(sae: Sae, workers: Workers) -> DashboardRun:
    run = factories.run_wait(sae.runs.get(), logs=workers.logs)
    assert run.status == DashboardRun.Status.SUCCEEDED, run.error
    return run


def _upload(client: Client, dataset: Dataset, sae_dir: Path, slug: str) -> Sae:
    return factories.sae_upload_post(client, dataset, factories.sae_upload_files(sae_dir), slug=slug)


def _results(client: Client, sae: Sae) -> list[dict[str, Any]]:
    """What the API serves for every feature, less the SAE's own id."""
    pages = []
    for index in range(sae.d_sae):
        body = client.get(f"/api/feature/{sae.language_model.slug}/{sae.slug}/{index}").json()
        body.pop("layer")
        pages.append(body)
    return pages


def _setup(settings: Any, tmp_path: Path) -> tuple[Client, Dataset, Path]:
    settings.ATLAS_RUN_BATCH_SIZE = BATCH_SIZE
    language_model = factories.language_model_make()
    dataset = factories.dataset_make(language_model, n_sequences=N_SEQUENCES)
    sae_dir = factories.sae_lens_write(tmp_path / "sae", d_in=language_model.d_model)
    client = Client()
    client.force_login(factories.user_make())
    return client, dataset, sae_dir


def test_three_shards_on_two_workers_equal_one_shard(workers: Workers, settings: Any, tmp_path: Path) -> None:
    client, dataset, sae_dir = _setup(settings, tmp_path)
    first, second = workers.start(), workers.start()

    settings.ATLAS_SHARD_SEQUENCES = 100
    whole = _upload(client, dataset, sae_dir, "whole")
    settings.ATLAS_SHARD_SEQUENCES = SHARD_SEQUENCES
    sharded = _upload(client, dataset, sae_dir, "sharded")
    whole_run, sharded_run = _succeeded(whole, workers), _succeeded(sharded, workers)

    assert whole_run.shards.count() == 1
    assert list(sharded_run.shards.values_list("first_seq", "n_seqs")) == [(0, 8), (8, 8), (16, 8)]
    assert all("dashboard_shard_execute" in "".join(worker.log) for worker in (first, second)), workers.logs()
    progress = client.get(f"/api/runs/{sharded_run.pk}").json()
    assert [(shard["firstSequence"], shard["status"]) for shard in progress["shards"]] == [
        (0, "succeeded"), (8, "succeeded"), (16, "succeeded")
    ]
    assert sum(shard["progressDone"] for shard in progress["shards"]) == sharded_run.tokens_total
    assert Feature.objects.filter(run=sharded_run).count() == sharded.d_sae
    whole_results, sharded_results = _results(client, whole), _results(client, sharded)
    assert any(len(page["activations"]) > 5 for page in whole_results)  # features with interval examples
    assert sharded_results == whole_results
    assert not (Path(settings.MEDIA_ROOT) / "runs").exists() or not any((Path(settings.MEDIA_ROOT) / "runs").iterdir())


def _until(condition: Callable[[], bool], workers: Workers) -> None:
    deadline = time.monotonic() + factories.RUN_TIMEOUT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.05)


def _kill(worker: Worker) -> None:
    os.kill(worker.process.pid, signal.SIGKILL)
    worker.process.wait(timeout=10)


def _events(client: Client, run: DashboardRun) -> str:
    return "\n".join(event["message"] for event in client.get(f"/api/runs/{run.pk}").json()["events"])


def _same_as_uninterrupted(client: Client, dataset: Dataset, sae_dir: Path, sae: Sae, workers: Workers,
                           settings: Any) -> None:
    run = sae.runs.get()
    assert Feature.objects.filter(run=run).count() == sae.d_sae
    assert Feature.objects.filter(run__sae=sae).count() == sae.d_sae  # no rows of a half-written run
    settings.ATLAS_SHARD_SEQUENCES = 100
    reference = _upload(client, dataset, sae_dir, "reference")
    _succeeded(reference, workers)
    assert _results(client, sae) == _results(client, reference)


def test_a_worker_killed_mid_shard_is_recovered_by_another_and_loses_nothing(
    workers: Workers, settings: Any, tmp_path: Path
) -> None:
    client, dataset, sae_dir = _setup(settings, tmp_path)
    settings.ATLAS_SHARD_SEQUENCES = SHARD_SEQUENCES
    # Two batches per shard, a second each: the worker is caught after its first batch of a shard.
    doomed = workers.start(batch_sleep=1.0)
    sae = _upload(client, dataset, sae_dir, "interrupted")
    caught = DashboardShard.objects.filter(run__sae=sae, status=DashboardShard.Status.RUNNING, progress_done__gt=0)
    _until(caught.exists, workers)
    _kill(doomed)
    interrupted = DashboardShard.objects.get(run__sae=sae, status=DashboardShard.Status.RUNNING)
    total = interrupted.n_seqs * dataset.context_length
    dead_worker, dead_progress = interrupted.worker, interrupted.progress_done
    assert 0 < dead_progress < total
    assert dead_worker.startswith(doomed.name.split("@")[0] + "@")

    # The broker's visibility timeout is its default (hours): only the recovery sweep hands the shard out again.
    rescuer = workers.start()
    run = _succeeded(sae, workers)

    interrupted.refresh_from_db()
    assert (interrupted.status, interrupted.attempts) == (DashboardShard.Status.SUCCEEDED, 2)
    assert interrupted.worker.startswith(rescuer.name.split("@")[0] + "@")
    events = _events(client, run)
    assert (f"Shard {interrupted.index + 1} of 3: worker {dead_worker} stopped reporting "
            f"at {dead_progress} / {total} tokens (no heartbeat for ") in events
    assert "handed to another worker (attempt 2 of 3)." in events
    assert f"Shard {interrupted.index + 1} of 3: restarted on {interrupted.worker} (attempt 2 of 3)." in events
    _same_as_uninterrupted(client, dataset, sae_dir, sae, workers, settings)


def test_a_worker_killed_mid_merge_is_recovered_by_another_and_loses_nothing(
    workers: Workers, settings: Any, tmp_path: Path
) -> None:
    client, dataset, sae_dir = _setup(settings, tmp_path)
    settings.ATLAS_SHARD_SEQUENCES = SHARD_SEQUENCES
    doomed = workers.start(merge_sleep=3600)  # killed long before it wakes
    sae = _upload(client, dataset, sae_dir, "interrupted")
    merging = DashboardRun.objects.filter(sae=sae, merge_attempts=1, merge_heartbeat__isnull=False)
    _until(merging.exists, workers)
    first_beat = merging.get().merge_heartbeat
    assert first_beat is not None
    rescuer = workers.start()
    # Alive, if asleep, the doomed worker keeps beating past the stale threshold; the rescuer's sweeps leave it.
    _until(merging.filter(merge_heartbeat__gt=first_beat + timedelta(seconds=STALE_SECONDS + 1)).exists, workers)
    assert merging.get().events == []
    _kill(doomed)

    run = _succeeded(sae, workers)

    assert run.merge_attempts == 2
    assert run.merge_worker.startswith(rescuer.name.split("@")[0] + "@")
    events = _events(client, run)
    assert "Merging the shards: worker " in events and "stopped reporting (no heartbeat for " in events
    assert f"Merging the shards: restarted on {run.merge_worker} (attempt 2 of 3)." in events
    _same_as_uninterrupted(client, dataset, sae_dir, sae, workers, settings)
