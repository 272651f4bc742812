"""A published feature with known numbers, for page and API tests; a private Postgres for crash tests."""

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlas.features.models import Feature
from atlas.features.selectors import feature_counts_from_rows
from atlas.features.services import run_results_publish
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, Sae
from tests.features.factories import dashboards_empty
from tests.features.private_postgres import PrivatePostgres

N_FEATURES, INDEX = 8, 3


@pytest.fixture
def published_feature(language_model: LanguageModel, dataset: Any) -> Feature:
    """Feature 3: one top example and one example in the lower of two intervals; windows of 2 + 1 + 1;
    neighbours 6 (cosine 0.75) and 1 (0.5)."""
    sae = Sae.objects.create(language_model=language_model, slug="0-res-8", hook_name="blocks.0.hook_resid_post",
                             layer=0, architecture="standard", d_in=language_model.d_model, d_sae=N_FEATURES,
                             files_dir="saes/x")
    run = DashboardRun.objects.create(sae=sae, dataset=dataset, n_sequences=4, top_k=2, context_before=2,
                                      context_after=1, tokens_total=4 * 48)
    dashboards = dashboards_empty(N_FEATURES)
    dashboards.frac_nonzero[INDEX], dashboards.max_act[INDEX] = 0.25, 4.0
    dashboards.act_hist_counts[INDEX] = [3, 1]
    dashboards.logit_top_ids[INDEX], dashboards.logit_top_values[INDEX] = [5, 6], [2.0, 1.0]
    dashboards.logit_bottom_ids[INDEX], dashboards.logit_bottom_values[INDEX] = [7, 8], [-2.0, -1.0]
    dashboards.logit_hist_counts[INDEX] = [1, 2, 1]
    dashboards.logit_hist_min[INDEX], dashboards.logit_hist_max[INDEX] = -3.0, 3.0
    top, intervals = dashboards.top, dashboards.intervals
    top.seq[INDEX, 0], top.values[INDEX, 0] = 0, 4.0
    top.window_tokens[INDEX, 0], top.window_values[INDEX, 0] = [-1, 10, 11, 12], [np.nan, 0.0, 4.0, 1.0]
    intervals.seq[INDEX, 0, 0], intervals.values[INDEX, 0, 0] = 1, 1.5
    intervals.window_tokens[INDEX, 0, 0] = [-1, -1, 13, 14]
    intervals.window_values[INDEX, 0, 0] = [np.nan, np.nan, 1.5, 0.0]
    dashboards.interval_counts[INDEX] = [3, 1]
    dashboards.neighbour_ids[INDEX], dashboards.neighbour_cosines[INDEX] = [6, 1], [0.75, 0.5]
    run_results_publish(run=run, dashboards=dashboards)
    return Feature.objects.get(run=run, index=INDEX)


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir it never uses.
        warnings.simplefilter("ignore")
        import pgserver

    # A short path: the server's socket lives in it and Unix socket paths are limited to ~100 bytes.
    pgdata = Path(tempfile.mkdtemp(prefix="atlas-pg-")) / "data"
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    socket_dir = server.get_postmaster_info().socket_dir
    assert socket_dir is not None
    postgres = PrivatePostgres(pgdata=pgdata, socket_dir=socket_dir, system_user=server.system_user)
    try:
        yield postgres
    finally:
        # Not server.cleanup(): after a test restarts the server, pgserver would stop the old, dead process.
        postgres.stop()
        server.cleanup()
        shutil.rmtree(pgdata.parent, ignore_errors=True)


@pytest.fixture
def listed_features(published_feature: Feature) -> Sae:
    """The published SAE with densities and maxima set per feature: 0, 1 and 2 are dead, 3 to 7 live."""
    densities = {3: 0.25, 4: 1e-4, 5: 0.01, 6: 0.5, 7: 1e-6}
    maxima = {3: 4.0, 4: 9.0, 5: 1.0, 6: 2.0, 7: 7.0}
    run = published_feature.run
    for feature in Feature.objects.filter(run=run):
        feature.frac_nonzero, feature.max_act = densities.get(feature.index, 0.0), maxima.get(feature.index, 0.0)
        feature.save(update_fields=["frac_nonzero", "max_act"])
    # Publishing counted the rows as they were; count them again, as publishing these values would have.
    counts = feature_counts_from_rows(run.pk)
    DashboardRun.objects.filter(pk=run.pk).update(features_total=counts.total, features_dead=counts.dead,
                                                  features_dense=counts.dense)
    sae: Sae = Sae.objects.select_related("published_run").get(pk=run.sae_id)
    return sae
