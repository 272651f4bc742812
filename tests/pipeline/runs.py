"""Uploading through the form and waiting for a real worker to finish the run, for the pipeline tests."""

import time
from pathlib import Path

from django.test import Client

from atlas.datasets.models import Dataset
from atlas.saes.models import DashboardRun, Sae
from tests import factories
from tests.pipeline.conftest import Workers

RUN_TIMEOUT_SECONDS = 240


def upload(client: Client, dataset: Dataset, sae_dir: Path, slug: str) -> Sae:
    data = {
        **factories.upload_form_data(dataset.language_model, dataset, slug=slug),
        **factories.sae_upload_files(sae_dir),
    }
    response = client.post("/upload/", data)
    assert response.status_code == 302, response.content.decode()[-2000:]
    return Sae.objects.get(slug=slug)


def run_finished(sae: Sae, workers: Workers) -> DashboardRun:
    """The SAE's run once it has succeeded or failed; the workers' logs if it does neither in time."""
    run = DashboardRun.objects.get(sae=sae)
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.is_finished:
            return run
        time.sleep(0.3)
    raise AssertionError(f"run {run.pk} is still {run.status} after {RUN_TIMEOUT_SECONDS} s:\n{workers.logs()}")
