"""Reads of a run's quality metrics, with its dead and dense feature counts, for the SAE page and the API."""

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q

from atlas.features.models import Feature
from atlas.saes.models import DashboardRun, RunMetrics, Sae

# A feature active on more than this share of the run's tokens is dense (Neuronpedia's and SAELens's 10%).
DENSE_FEATURE_FRACTION = 0.1
# Our field names and the API's, in the order the page lists them.
METRIC_API_NAMES = {
    "l0": "l0",
    "explained_variance": "explainedVariance",
    "mse": "mse",
    "cosine_similarity": "cosineSimilarity",
    "ce_loss_score": "ceLossScore",
    "ce_loss_clean": "ceLossClean",
    "ce_loss_with_sae": "ceLossWithSae",
    "ce_loss_zero_ablation": "ceLossZeroAblation",
    "kl_div_score": "klDivScore",
    "kl_div_with_sae": "klDivWithSae",
    "kl_div_zero_ablation": "klDivZeroAblation",
}


@dataclass(frozen=True)
class FeatureCounts:
    """Features never active on the run's tokens, and those active on more than DENSE_FEATURE_FRACTION."""

    dead: int
    dense: int
    total: int  # features stored for the run


@dataclass(frozen=True)
class RunMetricsView:
    run: DashboardRun
    metrics: RunMetrics | None  # None for a run recorded before metrics existed
    # None until the run's dashboards are published: the counts come from their densities.
    feature_counts: FeatureCounts | None


def run_feature_counts(run: DashboardRun) -> FeatureCounts | None:
    """The counts stored when the run was published; None for a run not published."""
    if run.features_total is None or run.features_dead is None or run.features_dense is None:
        return None
    return FeatureCounts(dead=run.features_dead, dense=run.features_dense, total=run.features_total)


def feature_counts_from_rows(run_id: int) -> FeatureCounts:
    """Count the run's dead and dense features in its rows (once, when it is published)."""
    counts = Feature.objects.filter(run_id=run_id).aggregate(
        total=Count("pk"),
        dead=Count("pk", filter=Q(frac_nonzero=0)),
        dense=Count("pk", filter=Q(frac_nonzero__gt=DENSE_FEATURE_FRACTION)),
    )
    return FeatureCounts(dead=counts["dead"], dense=counts["dense"], total=counts["total"])


def run_metrics_view(run: DashboardRun) -> RunMetricsView:
    return RunMetricsView(
        run=run, metrics=RunMetrics.objects.filter(run=run).first(), feature_counts=run_feature_counts(run)
    )


def sae_metrics_view(sae: Sae) -> RunMetricsView | None:
    """The metrics of the run whose dashboards the SAE's pages show, or of its newest run before any is published."""
    run = sae.published_run or sae.runs.order_by("-created").first()
    return None if run is None else run_metrics_view(run)


def run_metrics_payload(run: DashboardRun) -> dict[str, Any]:
    """The run's metrics under camelCase names, as Neuronpedia's API writes its fields; null until known."""
    view = run_metrics_view(run)
    metrics, counts = view.metrics, view.feature_counts
    return {
        "status": metrics.status if metrics else None,
        "error": metrics.error if metrics else "",
        "sequences": metrics.n_sequences if metrics else None,
        "tokens": metrics.n_tokens if metrics else None,
        **{api_name: getattr(metrics, name) if metrics else None for name, api_name in METRIC_API_NAMES.items()},
        "deadFeatures": counts.dead if counts else None,
        "denseFeatures": counts.dense if counts else None,
        "denseThreshold": DENSE_FEATURE_FRACTION,
    }
