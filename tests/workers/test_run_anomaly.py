"""A run's anomaly distribution: queued when the run publishes, stored apart from the dashboards, whose success its
failure never touches."""

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.saes.models import DashboardRun, RunAnomalyDistribution
from tests import factories
from workers import anomaly
from workers.anomaly import run_anomaly_distribution_execute
from workers.compute.anomaly import QUANTILES
from workers.runs import dashboard_run_execute


@pytest.fixture
def run(settings: Any, logged_in_client: Client, dataset: Dataset, sae_dir: Path) -> DashboardRun:
    settings.ATLAS_METRICS_SEQUENCES = 4
    sae = factories.sae_upload_post(logged_in_client, dataset, factories.sae_upload_files(sae_dir))
    run: DashboardRun = sae.runs.get()
    return run


def test_an_unpublished_run_has_no_distribution_to_compute(run: DashboardRun) -> None:
    run_anomaly_distribution_execute(run.pk, final=True)
    assert not RunAnomalyDistribution.objects.filter(run=run).exists()


def test_publishing_queues_it_and_the_worker_path_stores_its_tables(run: DashboardRun) -> None:
    dashboard_run_execute(run.pk)
    stored = RunAnomalyDistribution.objects.get(run=run)
    assert stored.status == RunAnomalyDistribution.Status.SUCCEEDED, stored.error
    assert (stored.attempts, stored.n_sequences, stored.n_tokens) == (1, 4, 4 * (run.dataset.context_length - 1))
    for table in (stored.reconstruction_error_quantiles, stored.rarity_quantiles):
        assert table is not None and len(table) == QUANTILES and table == sorted(table)


def test_its_failure_is_recorded_on_it_alone(run: DashboardRun, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("out of memory")

    monkeypatch.setattr(anomaly, "dataset_anomaly_scores", broken)
    dashboard_run_execute(run.pk)
    run.refresh_from_db()
    stored = RunAnomalyDistribution.objects.get(run=run)
    assert run.status == DashboardRun.Status.SUCCEEDED
    assert stored.status == RunAnomalyDistribution.Status.FAILED
    assert "RuntimeError: out of memory" in stored.error and stored.reconstruction_error_quantiles is None
