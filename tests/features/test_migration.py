"""Migration 0002 packs results stored one row per example into each feature's dashboard blob."""

from typing import Any

import psycopg
import pytest

from atlas.features.packing import StoredExample, dashboard_unpack
from tests.features.ingest_process import LEGACY_EXAMPLES, LEGACY_FEATURE
from tests.features.private_postgres import PrivatePostgres


def _example(row: dict[str, Any]) -> StoredExample:
    return StoredExample(row["token_ids"], pytest.approx(row["values"], rel=1e-3), row["focus"])


def test_migration_packs_row_per_example_results(private_postgres: PrivatePostgres, settings: Any) -> None:
    database = "legacy_results"
    private_postgres.database_create(database)
    private_postgres.ingest_process_run(database, settings.REDIS_URL, "legacy")
    with psycopg.connect(private_postgres.url(database)) as db:
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
