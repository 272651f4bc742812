"""feature_map on small random decoders: shapes, determinism, nested cluster levels, zero rows, tiny SAEs.

UMAP compiles with numba on its first fit (~20 s): the module fits one map and reuses it.
"""

import numpy as np
import numpy.typing as npt
import pytest

from workers.compute.feature_maps import FeatureMap, feature_map

N_FEATURES, D_IN = 60, 24
LEVELS = (3, 8, 20)
ZERO_ROWS = [7, 41]


def _decoder(n_features: int = N_FEATURES, seed: int = 0) -> npt.NDArray[np.float32]:
    """Rows around five directions, so the clusters have something to find, two of them zero."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, D_IN))
    rows = centres[rng.integers(0, 5, size=n_features)] + 0.3 * rng.normal(size=(n_features, D_IN))
    rows[[row for row in ZERO_ROWS if row < n_features]] = 0.0
    return rows.astype(np.float32)


@pytest.fixture(scope="module")
def fitted() -> FeatureMap:
    return feature_map(_decoder(), seed=3, levels=LEVELS)


def _assert_nested(clusters: npt.NDArray[np.int32]) -> None:
    """Each cluster of a finer level lies inside exactly one cluster of every coarser level."""
    for coarse in range(clusters.shape[1]):
        for fine in range(coarse + 1, clusters.shape[1]):
            for cluster in np.unique(clusters[:, fine]):
                assert np.unique(clusters[clusters[:, fine] == cluster, coarse]).shape == (1,)


def test_it_gives_a_point_and_a_cluster_per_level_for_every_feature(fitted: FeatureMap) -> None:
    assert fitted.xy.shape == (N_FEATURES, 2) and fitted.xy.dtype == np.float32
    assert fitted.clusters.shape == (N_FEATURES, 3) and fitted.clusters.dtype == np.int32
    assert np.all(np.isfinite(fitted.xy))
    assert fitted.levels == LEVELS


def test_levels_have_at_most_their_number_of_clusters(fitted: FeatureMap) -> None:
    live = np.delete(fitted.clusters, ZERO_ROWS, axis=0)
    for column, level in enumerate(LEVELS):
        assert live[:, column].min() == 0
        assert len(np.unique(live[:, column])) <= level
    assert len(np.unique(live[:, -1])) > len(np.unique(live[:, 0]))


def test_levels_are_nested(fitted: FeatureMap) -> None:
    _assert_nested(fitted.clusters)


def test_the_same_seed_gives_the_same_map(fitted: FeatureMap) -> None:
    again = feature_map(_decoder(), seed=3, levels=LEVELS)
    np.testing.assert_array_equal(again.xy, fitted.xy)
    np.testing.assert_array_equal(again.clusters, fitted.clusters)


def test_zero_rows_sit_at_the_centroid_with_no_cluster(fitted: FeatureMap) -> None:
    others = np.delete(fitted.xy, ZERO_ROWS, axis=0)
    np.testing.assert_allclose(fitted.xy[ZERO_ROWS], np.repeat(others.mean(axis=0, keepdims=True), 2, axis=0))
    assert np.all(fitted.clusters[ZERO_ROWS] == -1)
    assert np.all(np.delete(fitted.clusters, ZERO_ROWS, axis=0) >= 0)


def test_clusters_follow_the_decoder_direction_not_its_norm(fitted: FeatureMap) -> None:
    scaled = _decoder() * np.linspace(0.1, 10.0, N_FEATURES, dtype=np.float32)[:, None]
    np.testing.assert_array_equal(feature_map(scaled, seed=3, levels=LEVELS).clusters, fitted.clusters)


@pytest.mark.parametrize("n_features", [1, 2, 4])
def test_fewer_features_than_clusters_gives_one_cluster_each_at_most(n_features: int) -> None:
    result = feature_map(_decoder(n_features, seed=1), levels=(2, 8))
    assert result.xy.shape == (n_features, 2) and np.all(np.isfinite(result.xy))
    assert len(np.unique(result.clusters[:, 1])) == n_features
    _assert_nested(result.clusters)


def test_above_the_cluster_limit_a_sample_is_clustered_and_levels_stay_nested() -> None:
    decoder = _decoder(200, seed=2)
    result = feature_map(decoder, seed=0, levels=LEVELS, cluster_limit=50)
    _assert_nested(np.delete(result.clusters, ZERO_ROWS, axis=0))
    live = np.delete(result.clusters, ZERO_ROWS, axis=0)
    assert all(len(np.unique(live[:, column])) <= level for column, level in enumerate(LEVELS))


def test_a_large_decoder_is_reduced_by_pca_first() -> None:
    result = feature_map(_decoder(), seed=3, levels=LEVELS, pca_dims=10, pca_above=100)
    assert result.xy.shape == (N_FEATURES, 2) and np.all(np.isfinite(result.xy))
    _assert_nested(result.clusters)


def test_a_decoder_with_no_direction_has_no_clusters() -> None:
    result = feature_map(np.zeros((5, 4), dtype=np.float32))
    assert np.all(result.clusters == -1) and np.all(result.xy == 0.0)


def test_a_level_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        feature_map(_decoder(), levels=(0, 4))
