"""Anomaly scores on a worker: a published run's own distribution of them (its task's body), and what live
text's scores are read against (the published run's feature densities and that distribution)."""

import logging
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from atlas.datasets.selectors import dataset_tokens
from atlas.features.models import Feature
from atlas.saes import services
from atlas.saes.models import DashboardRun, RunAnomalyDistribution, Sae
from workers.attempts import Attempt, attempt_run
from workers.compute.anomaly import (
    AnomalyDistribution,
    FloatArray,
    anomaly_distribution,
    dataset_anomaly_scores,
    feature_surprisal,
)
from workers.loaded import language_model_loaded, sae_loaded, worker_device

logger = logging.getLogger(__name__)

# A run's densities are read once per worker process: d_sae rows, and a live request should not wait on them.
_surprisal: dict[int, FloatArray] = {}


@dataclass(frozen=True)
class AnomalyReference:
    """What live scores of an SAE are measured against."""

    surprisal: FloatArray | None  # [d_sae]; None without a published run: rarity is then unknown
    distribution: AnomalyDistribution | None  # None: percentiles are unknown, for the reason in `missing`
    missing: str


def run_surprisal(run: DashboardRun) -> FloatArray:
    """-log density of each of the run's features (workers.compute.anomaly.feature_surprisal), its densities
    measured on the run's tokens but each sequence's first where the run skips BOS."""
    if run.pk not in _surprisal:
        densities = np.zeros(run.sae.d_sae, dtype=np.float64)
        rows = np.array(Feature.objects.filter(run=run).values_list("index", "frac_nonzero"), dtype=np.float64)
        if rows.size:
            densities[rows[:, 0].astype(np.int64)] = rows[:, 1]
        skipped = 1 if run.dashboard_params.skip_bos else 0
        counted = run.n_sequences * (run.dataset.context_length - skipped)
        _surprisal.clear()  # the last run only: a worker serves one SAE's live requests at a time, mostly
        _surprisal[run.pk] = feature_surprisal(densities, max(counted, 1))
    return _surprisal[run.pk]


def anomaly_reference(sae: Sae) -> AnomalyReference:
    run = (DashboardRun.objects.select_related("sae", "dataset").filter(pk=sae.published_run_id).first()
           if sae.published_run_id else None)
    if run is None:
        return AnomalyReference(None, None, "The SAE has no published run, so neither its feature densities nor "
                                            "its dataset's distribution are known.")
    stored = RunAnomalyDistribution.objects.filter(run=run).first()
    if stored is None or stored.status != RunAnomalyDistribution.Status.SUCCEEDED:
        state = "was never queued" if stored is None else f"is {stored.status}"
        reason = f": {stored.error}" if stored is not None and stored.error else ""
        return AnomalyReference(run_surprisal(run), None, f"The published run's anomaly distribution {state}"
                                                          f"{reason}; percentiles appear once it is computed.")
    assert stored.n_tokens is not None and stored.reconstruction_error_quantiles is not None
    distribution = AnomalyDistribution(
        n_tokens=stored.n_tokens,
        reconstruction_error=np.array(stored.reconstruction_error_quantiles, dtype=np.float64),
        rarity=np.array(stored.rarity_quantiles, dtype=np.float64),
    )
    return AnomalyReference(run_surprisal(run), distribution, "")


def run_anomaly_distribution_execute(run_id: int, *, final: bool = False) -> None:
    """Compute and store a published run's anomaly distribution over the first ATLAS_METRICS_SEQUENCES sequences
    of its dataset, the metrics' sample (the task's body). final: this try is the last, whatever the count."""
    run = (DashboardRun.objects.select_related("sae__language_model", "dataset")
           .filter(pk=run_id, status=DashboardRun.Status.SUCCEEDED).first())
    distribution = services.run_anomaly_distribution_start(run_id=run_id) if run is not None else None
    if run is None or distribution is None:
        logger.info("run %s is gone or unpublished, or its anomaly distribution is done with", run_id)
        return
    attempt = Attempt(
        number=settings.ATLAS_TASK_ATTEMPTS if final else distribution.attempts,
        step="computing the anomaly distribution",
        requeue=lambda message: services.run_anomaly_distribution_requeue(distribution=distribution,
                                                                          message=message),
        fail=lambda message: services.run_anomaly_distribution_fail(distribution=distribution, message=message),
    )

    def compute() -> None:
        device = worker_device()
        model = language_model_loaded(run.sae.language_model, device)
        n_sequences = min(run.n_sequences, settings.ATLAS_METRICS_SEQUENCES)
        scores = dataset_anomaly_scores(model, sae_loaded(run.sae, device), run.sae.hook_name,
                                        dataset_tokens(run.dataset, n_sequences), run_surprisal(run),
                                        batch_size=run.dashboard_params.batch_size)
        found = anomaly_distribution(scores)
        services.run_anomaly_distribution_store(
            distribution=distribution, n_sequences=n_sequences, n_tokens=found.n_tokens,
            reconstruction_error_quantiles=found.reconstruction_error.tolist(),
            rarity_quantiles=found.rarity.tolist(),
        )

    attempt_run(compute, attempt)
