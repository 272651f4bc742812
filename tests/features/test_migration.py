"""Migrations of stored results: features 0002 packs results stored one row per example into each feature's
dashboard blob; saes 0005 moves a run's example settings into its stored DashboardParams."""

from typing import Any

import psycopg
import pytest
from django.conf import settings

from atlas.features.packing import StoredExample, dashboard_unpack
from tests.support.ingest_process import LEGACY_CONTEXT, LEGACY_EXAMPLES, LEGACY_FEATURE, LEGACY_TOP_K
from tests.support.private_postgres import PrivatePostgres
from workers.compute.params import DashboardParams


@pytest.fixture(scope="module")
def legacy_database(private_postgres: PrivatePostgres) -> str:
    """A database migrated from the row-per-example schema with LEGACY_FEATURE in it; its URL."""
    database = "legacy_results"
    private_postgres.database_create(database)
    private_postgres.ingest_process_run(database, settings.REDIS_URL, "legacy")
    return private_postgres.url(database)


def _example(row: dict[str, Any]) -> StoredExample:
    return StoredExample(row["token_ids"], pytest.approx(row["values"], rel=1e-3), row["focus"])


def test_migration_packs_row_per_example_results(legacy_database: str) -> None:
    with psycopg.connect(legacy_database) as db:
        row = db.execute("SELECT index, max_act, dashboard FROM features_feature").fetchone()
        example_table = db.execute("SELECT to_regclass('features_featureexample')").fetchone()
    assert row is not None and example_table == (None,)
    index, max_act, blob = row
    stored = dashboard_unpack(blob)
    top, interval_4_rank_0, interval_4_rank_1, interval_1 = map(_example, LEGACY_EXAMPLES)
    assert (index, max_act) == (LEGACY_FEATURE["index"], LEGACY_FEATURE["max_act"])
    assert stored.top == [top]
    assert stored.intervals == [[], [interval_1], [], [], [interval_4_rank_0, interval_4_rank_1]]
    assert [stored.interval_shares[1], stored.interval_shares[4]] == [0.5, 0.125]
    assert (stored.logit_top_ids, stored.logit_top_values) == ([9, 8], [1.5, 1.25])
    assert (stored.logit_bottom_ids, stored.logit_bottom_values) == ([1, 2], [-1.5, -1.0])
    assert (stored.act_hist_counts, stored.logit_hist_counts) == ([4, 0, 2], [1, 3])
    assert (stored.logit_hist_min, stored.logit_hist_max) == (-2.0, 2.0)


def test_migration_stores_each_runs_params_from_its_columns(legacy_database: str) -> None:
    with psycopg.connect(legacy_database) as db:
        row = db.execute("SELECT params FROM saes_dashboardrun").fetchone()
        columns = {name for (name,) in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'saes_dashboardrun'")}
    assert row is not None
    before, after = LEGACY_CONTEXT
    # batch_size 8: what saes 0002 gave runs made before it; the rest: the defaults every run then had.
    assert row[0] == {"top_k": LEGACY_TOP_K, "context_before": before, "context_after": after, "batch_size": 8,
                      "n_intervals": 5, "examples_per_interval": 5, "act_hist_bins": 50, "logit_hist_bins": 50,
                      "logit_tokens": 10, "neighbours": 10, "seed": 0, "skip_bos": True}
    assert DashboardParams.from_json(row[0]).window == before + 1 + after  # and a worker reads it back
    assert not columns & {"top_k", "context_before", "context_after", "batch_size"}
