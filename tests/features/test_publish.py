"""Publishing a run is atomic: readers see the previous run's results or all of the new ones."""

from dataclasses import replace

import numpy as np
import pytest

from atlas.datasets.models import Dataset
from atlas.features.models import Feature
from atlas.features.packing import dashboard_unpack
from atlas.features.services import (
    COPY_CHUNK_FEATURES,
    DashboardsShapeError,
    PackedFeatures,
    run_features_publish,
    run_results_publish,
)
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, Sae
from tests import factories
from workers.compute.params import DashboardParams
from workers.compute.results import Examples, FeatureDashboards

N_FEATURES, TOP_K, WINDOW = 4, 2, 5
PARAMS = DashboardParams(top_k=TOP_K, context_before=2, context_after=2)


def _examples(slots: tuple[int, ...], value: float, n_features: int) -> Examples:
    shape = (n_features, *slots)
    return Examples(
        seq=np.zeros(shape, dtype=np.int64),
        pos=np.full(shape, 2, dtype=np.int64),
        values=np.full(shape, value, dtype=np.float32),
        window_tokens=np.tile(np.array([-1, 3, 4, 5, 6], dtype=np.int32), (*shape, 1)),
        window_values=np.tile(np.array([np.nan, 0.0, value, 0.5, 0.0], dtype=np.float32), (*shape, 1)),
    )


def _dashboards(max_act: float, n_features: int = N_FEATURES) -> FeatureDashboards:
    return FeatureDashboards(
        n_tokens=100,
        frac_nonzero=np.full(n_features, 0.1),
        max_act=np.full(n_features, max_act, dtype=np.float32),
        top=_examples((TOP_K,), max_act, n_features),
        intervals=_examples((5, 1), max_act / 2, n_features),
        interval_counts=np.ones((n_features, 5), dtype=np.int64),
        act_hist_counts=np.ones((n_features, 50), dtype=np.int64),
        logit_top_ids=np.zeros((n_features, 3), dtype=np.int64),
        logit_top_values=np.ones((n_features, 3), dtype=np.float32),
        logit_bottom_ids=np.zeros((n_features, 3), dtype=np.int64),
        logit_bottom_values=-np.ones((n_features, 3), dtype=np.float32),
        logit_hist_counts=np.ones((n_features, 50), dtype=np.int64),
        logit_hist_min=-np.ones(n_features, dtype=np.float32),
        logit_hist_max=np.ones(n_features, dtype=np.float32),
        neighbour_ids=np.zeros((n_features, 2), dtype=np.int64),
        neighbour_cosines=np.zeros((n_features, 2), dtype=np.float32),
    )


@pytest.fixture
def sae(language_model: LanguageModel, dataset: Dataset) -> Sae:
    return factories.sae_make(language_model, slug="0-res-4", d_sae=N_FEATURES)


def _run(sae: Sae, dataset: Dataset) -> DashboardRun:
    return factories.run_make(sae, dataset, params=PARAMS)


def _published_max(sae: Sae) -> set[float]:
    sae.refresh_from_db()
    return set(Feature.objects.filter(run_id=sae.published_run_id).values_list("max_act", flat=True))


def test_publish_stores_every_feature_and_trims_windows(sae: Sae, dataset: Dataset) -> None:
    run = _run(sae, dataset)
    run_results_publish(run=run, dashboards=_dashboards(2.0))
    run.refresh_from_db()
    assert run.status == DashboardRun.Status.SUCCEEDED
    assert list(Feature.objects.filter(run=run).values_list("index", flat=True)) == list(range(N_FEATURES))
    stored = dashboard_unpack(bytes(Feature.objects.get(run=run, index=0).dashboard))
    example = stored.top[0]
    assert (example.token_ids, example.focus, example.value) == ([3, 4, 5, 6], 1, 2.0)
    assert (len(stored.top), [len(interval) for interval in stored.intervals]) == (TOP_K, [1] * 5)


def test_new_run_replaces_the_old_one(sae: Sae, dataset: Dataset) -> None:
    first, second = _run(sae, dataset), _run(sae, dataset)
    run_results_publish(run=first, dashboards=_dashboards(2.0))
    run_results_publish(run=second, dashboards=_dashboards(3.0))
    assert _published_max(sae) == {3.0}
    assert not Feature.objects.filter(run=first).exists()


def test_publishing_a_run_again_does_not_duplicate_it(sae: Sae, dataset: Dataset) -> None:
    run = _run(sae, dataset)
    run_results_publish(run=run, dashboards=_dashboards(2.0))
    run_results_publish(run=run, dashboards=_dashboards(3.0))
    assert Feature.objects.filter(run=run).count() == N_FEATURES
    assert _published_max(sae) == {3.0}


def test_features_beyond_one_copy_block_are_all_stored(sae: Sae, dataset: Dataset) -> None:
    run = _run(sae, dataset)
    n_features = COPY_CHUNK_FEATURES * 2 + 3
    run_results_publish(run=run, dashboards=_dashboards(2.0, n_features))
    indexes = Feature.objects.filter(run=run).values_list("index", flat=True)
    assert sorted(indexes) == list(range(n_features))


def test_a_failed_publish_leaves_the_previous_results(sae: Sae, dataset: Dataset) -> None:
    first, second = _run(sae, dataset), _run(sae, dataset)
    run_results_publish(run=first, dashboards=_dashboards(2.0))
    broken = replace(_dashboards(3.0), top=replace(_dashboards(3.0).top, seq=np.zeros((2, TOP_K), dtype=np.int64)))
    with pytest.raises(DashboardsShapeError, match=r"top\.seq has 2 features"):
        run_results_publish(run=second, dashboards=broken)
    assert _published_max(sae) == {2.0}
    assert not Feature.objects.filter(run=second).exists()


def test_packed_features_handed_over_in_one_block_are_stored_as_a_run(sae: Sae, dataset: Dataset) -> None:
    """What an import hands over: one block of packed rows, larger than a COPY chunk, published like a run."""
    first, second = _run(sae, dataset), _run(sae, dataset)
    run_results_publish(run=first, dashboards=_dashboards(2.0))
    n_features = COPY_CHUNK_FEATURES + 5
    blobs = np.zeros(n_features, dtype=[("blob", "u1", (3,))])
    blobs["blob"] = np.arange(n_features)[:, None] % 256
    packed = PackedFeatures(0, np.full(n_features, 0.5), np.full(n_features, 7.0), blobs)
    run_features_publish(run=second, features=[packed], phase="imported")
    second.refresh_from_db()
    assert (second.status, second.phase, second.progress_done) == (DashboardRun.Status.SUCCEEDED, "imported",
                                                                    n_features)
    stored = dict(Feature.objects.filter(run=second).values_list("index", "dashboard"))
    assert sorted(stored) == list(range(n_features))
    assert bytes(stored[COPY_CHUNK_FEATURES + 1]) == bytes([(COPY_CHUNK_FEATURES + 1) % 256] * 3)
    assert _published_max(sae) == {7.0}
    assert not Feature.objects.filter(run=first).exists()
