"""The published SAE with densities set per feature, for the feature list; a private Postgres for crash tests."""

import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from atlas.features.models import Feature
from atlas.features.selectors import feature_counts_from_rows
from atlas.saes.models import DashboardRun, Sae
from tests.support.private_postgres import PrivatePostgres


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
