"""bench/api.py's fill: every feature stored with its own density, its dashboard cycled from a pool."""

from typing import Any

import numpy as np
import pytest

from atlas.features.models import Feature
from atlas.features.packing import dashboard_unpack
from atlas.saes.models import Sae
from bench import api

N_FEATURES = 2_500
POOL = 1_024


@pytest.fixture
def stored(db: None, monkeypatch: Any) -> list[Feature]:
    monkeypatch.setattr(api, "DASHBOARD_POOL", POOL)
    api.features_store(N_FEATURES)
    sae = Sae.objects.get(slug=api.SAE)
    return list(Feature.objects.filter(run_id=sae.published_run_id).order_by("index"))


def test_every_feature_is_stored_and_published_with_its_own_density(stored: list[Feature]) -> None:
    frac_nonzero, max_act = api.densities_synthetic(N_FEATURES)
    assert [feature.index for feature in stored] == list(range(N_FEATURES))
    assert np.array_equal([feature.frac_nonzero for feature in stored], frac_nonzero)
    assert np.allclose([feature.max_act for feature in stored], max_act)
    run = Sae.objects.select_related("published_run").get(slug=api.SAE).published_run
    assert run is not None
    assert (run.features_total, run.features_dead) == (N_FEATURES, int((frac_nonzero == 0).sum()))


def test_dashboards_repeat_the_pool(stored: list[Feature]) -> None:
    assert bytes(stored[POOL].dashboard) == bytes(stored[0].dashboard) != bytes(stored[1].dashboard)
    last = dashboard_unpack(bytes(stored[-1].dashboard))
    assert last.top == dashboard_unpack(bytes(stored[(N_FEATURES - 1) % POOL].dashboard)).top
