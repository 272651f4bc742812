"""bench.ingest's Django half, imported once settings point at the scratch database.

Holds the baseline: the writer Atlas used before packed dashboards,
bulk_create of one row per feature with array columns and one row per example, into copies of those
two tables that exist only in the scratch database.
"""

import numpy as np
import numpy.typing as npt
from django.contrib.postgres.fields import ArrayField
from django.db import connection, models, transaction

from atlas.features.services import run_mark_published
from atlas.saes.models import DashboardRun, Sae
from workers.compute.results import Examples, FeatureDashboards

_BATCH = 2000


class LegacyFeature(models.Model):
    run = models.ForeignKey(DashboardRun, on_delete=models.CASCADE, related_name="+")
    index = models.IntegerField()
    frac_nonzero = models.FloatField()
    max_act = models.FloatField()
    act_hist_counts = ArrayField(models.BigIntegerField())
    logit_pos_ids = ArrayField(models.IntegerField())
    logit_pos_values = ArrayField(models.FloatField())
    logit_neg_ids = ArrayField(models.IntegerField())
    logit_neg_values = ArrayField(models.FloatField())
    logit_hist_counts = ArrayField(models.BigIntegerField())
    logit_hist_min = models.FloatField()
    logit_hist_max = models.FloatField()

    objects: models.Manager["LegacyFeature"] = models.Manager()

    class Meta:
        app_label = "features"
        db_table = "bench_legacy_feature"
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="bench_legacy_unique_feature")]

    def __str__(self) -> str:
        return f"legacy feature {self.index}"


class LegacyFeatureExample(models.Model):
    feature = models.ForeignKey(LegacyFeature, on_delete=models.CASCADE, related_name="+")
    kind = models.SmallIntegerField()
    rank = models.SmallIntegerField()
    bin_min = models.FloatField(null=True)
    bin_max = models.FloatField(null=True)
    bin_contains = models.FloatField(null=True)
    token_ids = ArrayField(models.IntegerField())
    values = ArrayField(models.FloatField())
    focus = models.SmallIntegerField()
    value = models.FloatField()

    objects: models.Manager["LegacyFeatureExample"] = models.Manager()

    class Meta:
        app_label = "features"
        db_table = "bench_legacy_featureexample"
        indexes = [models.Index(fields=["feature", "kind"], name="bench_legacy_example_kind")]

    def __str__(self) -> str:
        return f"legacy example {self.rank}"


TOP, INTERVAL = 0, 1


def row_bytes_per_feature(n_features: int, *tables: str) -> float:
    """Stored row data (TOAST included, after compression; indexes not) of these tables, per feature."""
    with connection.cursor() as cursor:
        total = 0
        for table in tables:
            cursor.execute(f"SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {connection.ops.quote_name(table)} t")
            total += int(cursor.fetchone()[0])
    return total / n_features


def dashboard_compression() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT attcompression, attstorage FROM pg_attribute "
                       "WHERE attrelid = 'features_feature'::regclass AND attname = 'dashboard'")
        compression, storage = cursor.fetchone()
    return {"l": "lz4", "p": "pglz"}.get(compression, "uncompressed" if storage == "e" else "pglz")


def legacy_tables_create() -> None:
    with connection.schema_editor() as editor:
        editor.create_model(LegacyFeature)
        editor.create_model(LegacyFeatureExample)


def _window(example_tokens: npt.NDArray[np.int32], example_values: npt.NDArray[np.float32],
            context_before: int) -> tuple[list[int], list[float], int]:
    inside = example_tokens >= 0
    left_missing = int(np.argmax(inside)) if inside.any() else 0
    values = np.nan_to_num(example_values[inside], nan=0.0)
    return example_tokens[inside].tolist(), values.astype(float).tolist(), context_before - left_missing


def _example(examples: Examples, feature: int, slots: tuple[int, ...], context_before: int,
             **fields: object) -> LegacyFeatureExample | None:
    if examples.seq[(feature, *slots)] < 0:
        return None
    tokens, values, focus = _window(
        examples.window_tokens[(feature, *slots)], examples.window_values[(feature, *slots)], context_before
    )
    return LegacyFeatureExample(token_ids=tokens, values=values, focus=focus,
                                value=float(examples.values[(feature, *slots)]), **fields)


def _feature_examples(dashboards: FeatureDashboards, index: int, context_before: int) -> list[LegacyFeatureExample]:
    rows: list[LegacyFeatureExample | None] = [
        _example(dashboards.top, index, (rank,), context_before, kind=TOP, rank=rank)
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
            _example(dashboards.intervals, index, (interval, rank), context_before, kind=INTERVAL, rank=rank,
                     **bounds)
            for rank in range(per_interval)
        )
    return [row for row in rows if row is not None]


def _feature_row(run: DashboardRun, dashboards: FeatureDashboards, index: int) -> LegacyFeature:
    return LegacyFeature(
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


def run_results_publish_orm(*, run: DashboardRun, dashboards: FeatureDashboards) -> None:
    """The previous run_results_publish, line for line, writing the legacy tables."""
    n_features = dashboards.frac_nonzero.shape[0]
    context_before = run.dashboard_params.context_before
    with transaction.atomic():
        sae = Sae.objects.select_for_update().get(pk=run.sae_id)
        LegacyFeature.objects.filter(run=run).delete()
        features = LegacyFeature.objects.bulk_create(
            [_feature_row(run, dashboards, index) for index in range(n_features)], batch_size=_BATCH
        )
        examples: list[LegacyFeatureExample] = []
        for feature in features:
            for example in _feature_examples(dashboards, feature.index, context_before):
                example.feature = feature
                examples.append(example)
        LegacyFeatureExample.objects.bulk_create(examples, batch_size=_BATCH)
        previous = run_mark_published(sae=sae, run=run, n_features=n_features)
        if previous is not None:
            LegacyFeature.objects.filter(run_id=previous).delete()
