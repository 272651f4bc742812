"""Writing a run's results: all features and examples in one transaction, then publish the run."""

import numpy as np
import numpy.typing as npt
from django.db import transaction
from django.utils import timezone

from atlas.features.models import Feature, FeatureExample
from atlas.saes.models import DashboardRun, Sae
from workers.compute.results import Examples, FeatureDashboards

_BATCH = 2000


def _window(example_tokens: npt.NDArray[np.int32], example_values: npt.NDArray[np.float32],
            context_before: int) -> tuple[list[int], list[float], int]:
    """Trim the positions outside the sequence; returns tokens, values and the example token's index."""
    inside = example_tokens >= 0
    left_missing = int(np.argmax(inside)) if inside.any() else 0
    values = np.nan_to_num(example_values[inside], nan=0.0)
    return example_tokens[inside].tolist(), values.astype(float).tolist(), context_before - left_missing


def _examples_for(examples: Examples, feature: int, slots: tuple[int, ...], context_before: int,
                  **fields: object) -> FeatureExample | None:
    if examples.seq[(feature, *slots)] < 0:
        return None
    tokens, values, focus = _window(
        examples.window_tokens[(feature, *slots)], examples.window_values[(feature, *slots)], context_before
    )
    return FeatureExample(token_ids=tokens, values=values, focus=focus,
                          value=float(examples.values[(feature, *slots)]), **fields)


def _feature_examples(dashboards: FeatureDashboards, index: int, context_before: int) -> list[FeatureExample]:
    rows: list[FeatureExample | None] = [
        _examples_for(dashboards.top, index, (rank,), context_before, kind=FeatureExample.Kind.TOP, rank=rank)
        for rank in range(dashboards.top.seq.shape[1])
    ]
    n_intervals, per_interval = dashboards.intervals.seq.shape[1:3]
    max_act = float(dashboards.max_act[index])
    active = int(dashboards.interval_counts[index].sum())
    for interval in range(n_intervals):
        share = float(dashboards.interval_counts[index, interval]) / active if active else 0.0
        bounds = {
            "bin_min": max_act * interval / n_intervals,
            "bin_max": max_act * (interval + 1) / n_intervals,
            "bin_contains": share,
        }
        rows.extend(
            _examples_for(dashboards.intervals, index, (interval, rank), context_before,
                          kind=FeatureExample.Kind.INTERVAL, rank=rank, **bounds)
            for rank in range(per_interval)
        )
    return [row for row in rows if row is not None]


def _feature_row(run: DashboardRun, dashboards: FeatureDashboards, index: int) -> Feature:
    return Feature(
        run=run,
        index=index,
        frac_nonzero=float(dashboards.frac_nonzero[index]),
        max_act=float(dashboards.max_act[index]),
        act_hist_counts=dashboards.act_hist_counts[index].tolist(),
        logit_pos_ids=dashboards.logit_top_ids[index].tolist(),
        logit_pos_values=dashboards.logit_top_values[index].astype(float).tolist(),
        logit_neg_ids=dashboards.logit_bottom_ids[index].tolist(),
        logit_neg_values=dashboards.logit_bottom_values[index].astype(float).tolist(),
        logit_hist_counts=dashboards.logit_hist_counts[index].tolist(),
        logit_hist_min=float(dashboards.logit_hist_min[index]),
        logit_hist_max=float(dashboards.logit_hist_max[index]),
    )


def run_results_publish(*, run: DashboardRun, dashboards: FeatureDashboards) -> None:
    """Store every feature of the run and make it the SAE's published run, atomically.

    Readers follow sae.published_run, so they see the previous run's features or all of these.
    """
    n_features = dashboards.frac_nonzero.shape[0]
    with transaction.atomic():
        sae = Sae.objects.select_for_update().get(pk=run.sae_id)
        # A redelivered task may have written part of this run before it died: start clean.
        Feature.objects.filter(run=run).delete()
        features = Feature.objects.bulk_create(
            [_feature_row(run, dashboards, index) for index in range(n_features)], batch_size=_BATCH
        )
        examples: list[FeatureExample] = []
        for feature in features:
            for example in _feature_examples(dashboards, feature.index, run.context_before):
                example.feature = feature
                examples.append(example)
        FeatureExample.objects.bulk_create(examples, batch_size=_BATCH)
        previous = sae.published_run_id
        sae.published_run = run
        sae.save(update_fields=["published_run"])
        DashboardRun.objects.filter(pk=run.pk).update(
            status=DashboardRun.Status.SUCCEEDED,
            finished=timezone.now(),
            phase="done",
            error="",
            progress_done=n_features,
            progress_total=n_features,
        )
        if previous is not None and previous != run.pk:
            Feature.objects.filter(run_id=previous).delete()
