"""A file that goes bad after the upload's checks fails its run with a message, and the worker lives on."""

from pathlib import Path
from typing import Any

from django.test import Client

from atlas.saes.models import DashboardRun
from tests import factories
from tests.support.workers import Workers


def test_a_corrupt_weights_file_fails_the_run_and_the_worker_runs_the_next(
    workers: Workers, settings: Any, tmp_path: Path
) -> None:
    settings.ATLAS_RUN_BATCH_SIZE = 4
    dataset = factories.dataset_make(factories.language_model_make(), n_sequences=8)
    client = Client()
    client.force_login(factories.user_make())
    d_in = dataset.language_model.d_model
    bad_files = factories.sae_upload_files(factories.sae_lens_write(tmp_path / "bad", d_in=d_in))
    bad = factories.sae_upload_post(client, dataset, bad_files, slug="0-res-bad")
    # The upload was checked and stored; the file breaks on disk before any worker has taken the run.
    (bad.files_path / "sae_weights.safetensors").write_bytes(b"\x00corrupt")
    worker = workers.start()

    failed = factories.run_wait(bad.runs.get(), logs=workers.logs)
    assert failed.status == DashboardRun.Status.FAILED
    assert "sae_weights.safetensors is not a safetensors file" in failed.error

    good_files = factories.sae_upload_files(factories.sae_lens_write(tmp_path / "good", d_in=d_in))
    good = factories.sae_upload_post(client, dataset, good_files, slug="0-res-good")
    succeeded = factories.run_wait(good.runs.get(), logs=workers.logs)
    assert succeeded.status == DashboardRun.Status.SUCCEEDED, succeeded.error
    assert worker.process.poll() is None, workers.logs()
    assert workers.started == [worker]
