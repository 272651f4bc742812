"""Anomaly scores on live text through real worker processes: a published run's distribution is computed after it
publishes, and POST /api/activation/new answers each token's scores and percentiles as a direct computation does."""

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client

from atlas.datasets.selectors import dataset_tokens
from atlas.features.models import Feature
from atlas.saes.models import DashboardRun, RunAnomalyDistribution, Sae
from tests import factories
from tests.support.tiny_model import tiny_model_dir
from tests.support.workers import Workers
from workers.compute.anomaly import (
    QUANTILES,
    anomaly_distribution,
    dataset_anomaly_scores,
    feature_activations_with_anomaly,
    feature_surprisal,
    percentiles,
)
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.sae import sae_load

TEXT = "Return a new list containing all items from the iterable in ascending order."
DISTRIBUTION_TIMEOUT_SECONDS = 120


def _post(body: dict[str, Any]) -> Any:
    response = Client().post("/api/activation/new", json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def _distribution_wait(run: DashboardRun, workers: Workers) -> RunAnomalyDistribution:
    deadline = time.monotonic() + DISTRIBUTION_TIMEOUT_SECONDS
    while True:
        found = RunAnomalyDistribution.objects.filter(run=run).first()
        if found is not None and found.status in (RunAnomalyDistribution.Status.SUCCEEDED,
                                                  RunAnomalyDistribution.Status.FAILED):
            return found
        assert time.monotonic() < deadline, f"no anomaly distribution for run {run.pk}:\n{workers.logs()}"
        time.sleep(0.3)


@pytest.fixture
def computed(workers: Workers, settings: Any, tmp_path: Path) -> tuple[DashboardRun, RunAnomalyDistribution]:
    """An SAE uploaded through the form and computed by a real worker, which stays up for live requests."""
    settings.ATLAS_METRICS_SEQUENCES = 6  # read by the test process; the worker has its own: see below
    workers.env["ATLAS_METRICS_SEQUENCES"] = "6"
    workers.start()
    language_model = factories.language_model_make()
    dataset = factories.dataset_make(language_model)
    run = factories.uploaded_run_computed(dataset, tmp_path / "sae", workers.logs)
    return run, _distribution_wait(run, workers)


def _surprisal(run: DashboardRun) -> np.ndarray:
    densities = np.zeros(run.sae.d_sae)
    for index, density in Feature.objects.filter(run=run).values_list("index", "frac_nonzero"):
        densities[index] = density
    return feature_surprisal(densities, run.n_sequences * (run.dataset.context_length - 1))


def test_the_distribution_is_that_of_the_runs_first_sequences(
    computed: tuple[DashboardRun, RunAnomalyDistribution]
) -> None:
    run, stored = computed
    assert stored.status == RunAnomalyDistribution.Status.SUCCEEDED, stored.error
    model = load_language_model(ModelSource(kind="hf_local", name_or_path=str(tiny_model_dir())))
    scores = dataset_anomaly_scores(model, sae_load(run.sae.files_path), run.sae.hook_name,
                                    dataset_tokens(run.dataset, 6), _surprisal(run))
    expected = anomaly_distribution(scores)
    assert (stored.n_sequences, stored.n_tokens) == (6, 6 * (run.dataset.context_length - 1)) == (
        6, expected.n_tokens)
    assert len(stored.reconstruction_error_quantiles or []) == QUANTILES
    np.testing.assert_allclose(stored.reconstruction_error_quantiles or [], expected.reconstruction_error, rtol=1e-5)
    np.testing.assert_allclose(stored.rarity_quantiles or [], expected.rarity, rtol=1e-5, atol=1e-7)

    # The live answer, on the same worker: its scores and percentiles are the direct computation's.
    busiest = Feature.objects.filter(run=run).order_by("-frac_nonzero").first()
    assert busiest is not None
    body = _post({"feature": {"modelId": "tiny-llama", "source": run.sae.slug, "index": busiest.index},
                  "customText": TEXT})
    found, direct = feature_activations_with_anomaly(model, sae_load(run.sae.files_path), run.sae.hook_name, TEXT,
                                                     busiest.index, _surprisal(run))
    np.testing.assert_allclose(body["values"], found.values[0], rtol=1e-5, atol=1e-6)  # the existing fields stay
    answer = body["anomaly"]
    assert answer["reconstructionError"][0] is None and answer["rarityPercentile"][0] is None  # BOS counts nowhere
    np.testing.assert_allclose(answer["reconstructionError"][1:], direct.reconstruction_error[1:], rtol=1e-4)
    np.testing.assert_allclose(answer["rarity"][1:], direct.rarity[1:], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(answer["reconstructionErrorPercentile"][1:],
                               percentiles(direct.reconstruction_error[1:], expected.reconstruction_error), atol=1e-4)
    np.testing.assert_allclose(answer["rarityPercentile"][1:], percentiles(direct.rarity[1:], expected.rarity),
                               atol=1e-4)
    peak = int(np.argmax(direct.reconstruction_error[1:])) + 1
    assert answer["maxReconstructionErrorTokenIndex"] == peak
    assert answer["maxReconstructionError"] == answer["reconstructionError"][peak]
    assert answer["maxRarityPercentile"] == answer["rarityPercentile"][answer["maxRarityTokenIndex"]]
    assert (answer["datasetTokens"], answer["message"]) == (stored.n_tokens, None)


@pytest.fixture
def unpublished(workers: Workers, media_root: Path) -> Sae:
    """An SAE on disk with no run."""
    language_model = factories.language_model_make()
    factories.sae_lens_write(media_root / "saes" / "live", d_in=language_model.d_model)
    sae = factories.sae_make(language_model, slug="0-res-live", d_sae=48, files_dir="saes/live")
    workers.start()
    return sae


def test_without_a_published_run_the_answer_says_why_scores_are_missing(unpublished: Sae) -> None:
    body = _post({"feature": {"modelId": "tiny-llama", "source": unpublished.slug, "index": 0}, "customText": TEXT})
    answer = body["anomaly"]
    assert len(answer["reconstructionError"]) == len(body["tokens"]) > 1
    assert all(value > 0 for value in answer["reconstructionError"][1:])
    assert answer["maxReconstructionError"] == max(answer["reconstructionError"][1:])
    for unknown in ("rarity", "reconstructionErrorPercentile", "rarityPercentile", "maxRarity",
                    "maxReconstructionErrorPercentile", "datasetTokens"):
        assert answer[unknown] is None, unknown
    assert "no published run" in answer["message"]


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"feature": {"modelId": "tiny-llama", "source": "0-res-live", "index": 48}, "customText": TEXT}, 404,
     "there is no feature 48"),
    ({"feature": {"modelId": "tiny-llama", "source": "0-res-live", "index": 0}, "customText": " "}, 400,
     "'customText' is empty"),
    ({"feature": {"modelId": "tiny-llama", "source": "0-res-live"}, "customText": TEXT}, 400,
     "'feature.index' is required"),
])
def test_bad_input_is_a_4xx_that_names_the_problem(db: None, body: dict[str, Any], status: int, words: str) -> None:
    factories.sae_make(factories.language_model_make(), slug="0-res-live", d_sae=48)
    response = Client().post("/api/activation/new", json.dumps(body), content_type="application/json")
    assert response.status_code == status
    assert words in response.json()["message"]
    assert not RunAnomalyDistribution.objects.exists()
