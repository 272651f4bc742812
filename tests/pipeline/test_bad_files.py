"""A file that goes bad after the upload's checks fails its run with a message, and the worker lives on."""

import time
from pathlib import Path
from typing import Any

from django.test import Client

from atlas.datasets.models import Dataset
from atlas.saes.models import DashboardRun, Sae
from tests import factories
from tests.pipeline.conftest import Workers

RUN_TIMEOUT_SECONDS = 240


def _upload(client: Client, dataset: Dataset, sae_dir: Path, slug: str) -> Sae:
    language_model = dataset.language_model
    data = {**factories.upload_form_data(language_model, dataset, slug=slug), **factories.sae_upload_files(sae_dir)}
    response = client.post("/upload/", data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    return Sae.objects.get(slug=slug)


def _finished(sae: Sae, workers: Workers) -> DashboardRun:
    run = DashboardRun.objects.get(sae=sae)
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_finished:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run.pk} is still {run.status} after {RUN_TIMEOUT_SECONDS} s:\n{workers.logs()}")


def test_a_corrupt_weights_file_fails_the_run_and_the_worker_runs_the_next(
    workers: Workers, settings: Any, tmp_path: Path
) -> None:
    settings.ATLAS_RUN_BATCH_SIZE = 4
    dataset = factories.dataset_make(factories.language_model_make(), n_sequences=8)
    client = Client()
    client.force_login(factories.user_make())
    d_in = dataset.language_model.d_model
    bad = _upload(client, dataset, factories.sae_lens_write(tmp_path / "bad", d_in=d_in), slug="0-res-bad")
    # The upload was checked and stored; the file breaks on disk before any worker has taken the run.
    (bad.files_path / "sae_weights.safetensors").write_bytes(b"\x00corrupt")
    worker = workers.start()

    failed = _finished(bad, workers)
    assert failed.status == DashboardRun.Status.FAILED
    assert "sae_weights.safetensors is not a safetensors file" in failed.error

    good = _upload(client, dataset, factories.sae_lens_write(tmp_path / "good", d_in=d_in), slug="0-res-good")
    succeeded = _finished(good, workers)
    assert succeeded.status == DashboardRun.Status.SUCCEEDED, succeeded.error
    assert worker.process.poll() is None, workers.logs()
    assert workers.started == [worker]
