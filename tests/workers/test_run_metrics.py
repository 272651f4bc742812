"""A run's quality metrics: computed by the worker path, stored apart from the dashboards, shown on the page and API."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.datasets.selectors import dataset_tokens
from atlas.saes.models import DashboardRun, RunMetrics
from tests import factories
from workers import runs
from workers.attempts import RetryLater
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.metrics import sae_metrics
from workers.compute.sae import sae_load
from workers.runs import dashboard_run_execute, run_metrics_execute

METRICS_SEQUENCES = 8


@pytest.fixture
def run(settings: Any, logged_in_client: Client, dataset: Dataset, sae_dir: Path) -> DashboardRun:
    settings.ATLAS_METRICS_SEQUENCES = METRICS_SEQUENCES
    sae = factories.sae_upload_post(logged_in_client, dataset, factories.sae_upload_files(sae_dir))
    run: DashboardRun = sae.runs.get()
    return run


def _fail_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the unembedding ran out of memory")

    monkeypatch.setattr(runs, "sae_metrics", broken)


def test_an_upload_records_metrics_to_compute(run: DashboardRun) -> None:
    assert RunMetrics.objects.get(run=run).status == RunMetrics.Status.QUEUED


def test_the_worker_path_stores_the_metrics_of_the_first_sequences(run: DashboardRun, sae_dir: Path) -> None:
    dashboard_run_execute(run.pk)
    metrics = RunMetrics.objects.get(run=run)
    assert metrics.status == RunMetrics.Status.SUCCEEDED, metrics.error
    model = load_language_model(ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir())))
    tokens = dataset_tokens(run.dataset, METRICS_SEQUENCES)
    expected = sae_metrics(model, sae_load(sae_dir), tokens, run.sae.hook_name,
                           batch_size=run.dashboard_params.batch_size)
    assert metrics.n_sequences == METRICS_SEQUENCES and metrics.n_tokens == expected.n_tokens
    for name in ("l0", "explained_variance", "mse", "ce_loss_clean", "ce_loss_with_sae", "kl_div_zero_ablation"):
        assert getattr(metrics, name) == pytest.approx(getattr(expected, name), rel=1e-5), name


def test_dead_and_dense_counts_are_those_of_every_token_of_the_run(run: DashboardRun, sae_dir: Path) -> None:
    dashboard_run_execute(run.pk)
    model = load_language_model(ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir())))
    tokens = torch.from_numpy(dataset_tokens(run.dataset, run.n_sequences).astype(np.int64))
    with torch.inference_mode():
        _, cache = model.run_with_cache(tokens, names_filter=[run.sae.hook_name])
        acts = sae_load(sae_dir).encode(cache[run.sae.hook_name])[:, 1:]  # BOS excluded, as the dashboards do
    active = (acts > 0).sum(dim=(0, 1))
    n_tokens = acts.shape[0] * acts.shape[1]
    dead, dense = int((active == 0).sum()), int((active / n_tokens > 0.1).sum())
    assert dead > 0 and dense > 0  # the test SAE has both
    payload = Client().get(f"/api/runs/{run.pk}").json()["metrics"]
    assert (payload["deadFeatures"], payload["denseFeatures"]) == (dead, dense)


def test_the_page_and_the_api_show_the_metrics(run: DashboardRun) -> None:
    dashboard_run_execute(run.pk)
    metrics = RunMetrics.objects.get(run=run)
    page = Client().get("/tiny-llama/0-res-48/").content.decode()
    assert "Explained variance" in page and f"{metrics.explained_variance:.4f}" in page
    assert "CE loss score" in page and "Dead features" in page
    payload = Client().get(f"/api/runs/{run.pk}").json()["metrics"]
    assert payload["status"] == "succeeded"
    assert payload["l0"] == metrics.l0 and payload["explainedVariance"] == metrics.explained_variance
    assert payload["ceLossScore"] == metrics.ce_loss_score and payload["klDivScore"] == metrics.kl_div_score
    assert payload["sequences"] == METRICS_SEQUENCES


def test_a_metrics_failure_is_retried(run: DashboardRun, monkeypatch: pytest.MonkeyPatch) -> None:
    _fail_metrics(monkeypatch)
    with pytest.raises(RetryLater):
        run_metrics_execute(run.pk)
    metrics = RunMetrics.objects.get(run=run)
    assert (metrics.status, metrics.attempts) == (RunMetrics.Status.QUEUED, 1)
    assert "ran out of memory" in metrics.error


def test_a_metrics_failure_leaves_the_dashboards_run_succeeded_and_shows_its_error(
    run: DashboardRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fail_metrics(monkeypatch)
    dashboard_run_execute(run.pk)
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.SUCCEEDED, run.error
    metrics = RunMetrics.objects.get(run=run)
    assert metrics.status == RunMetrics.Status.FAILED
    assert metrics.error == (
        "computing the metrics failed after 3 attempts: RuntimeError: the unembedding ran out of memory"
    )
    page = Client().get("/tiny-llama/0-res-48/").content.decode()
    assert "The metrics could not be computed: computing the metrics failed after 3 attempts" in page
    payload = Client().get(f"/api/runs/{run.pk}").json()
    assert payload["status"] == "succeeded"
    assert payload["metrics"]["status"] == "failed" and payload["metrics"]["l0"] is None
