"""A 2-D map of an SAE's features and a nested clustering of them, from their unit decoder directions.

The map is a UMAP (cosine metric) of the unit decoder rows, after a PCA when W_dec is large. The clusters are
cuts of ONE average-linkage (cosine) dendrogram at a few sizes, so every finer cluster lies inside exactly one
coarser cluster.

Limits. Average linkage needs all pairwise distances, O(n^2) memory (n = 4,096: 67 MB of float64), so at most
cluster_limit features enter the dendrogram: above that, a seeded random sample of cluster_limit features is
clustered and every other feature takes all the cluster ids of its nearest sampled feature by decoder cosine
(chunked [chunk, d_in] @ [d_in, sample] products). Nesting survives because each feature copies one sampled
feature's whole path. UMAP's nearest-neighbour descent is about O(F log F); with a fixed seed UMAP runs on
one thread, the price of being deterministic (65,536 features take minutes, see bench/geometry.py).

A zero decoder row has no direction: it sits at the centroid of the others on the map and has cluster id -1 at
every level.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.cluster.hierarchy
import torch
from sklearn.decomposition import PCA

from workers.compute.neighbours import NEIGHBOUR_CHUNK_ELEMENTS

CLUSTER_LEVELS = (8, 32, 128)
# Features in the dendrogram at most; average linkage holds n (n - 1) / 2 float64 distances.
CLUSTER_LIMIT = 4096
# PCA to pca_dims first when W_dec has more elements than this and more than pca_dims columns.
PCA_ABOVE_ELEMENTS = 1 << 20
UMAP_NEIGHBOURS = 15


@dataclass(frozen=True)
class FeatureMap:
    """Every feature's place on the map and its cluster at each level (coarse to fine, as the levels were given)."""

    xy: npt.NDArray[np.float32]  # [F, 2]
    clusters: npt.NDArray[np.int32]  # [F, len(levels)] ids 0 .. level - 1; -1 for a zero decoder row
    levels: tuple[int, ...]  # the number of clusters asked for at each level


def feature_map(
    W_dec: npt.NDArray[np.floating],  # [F, d_in]
    *,
    seed: int = 0,
    levels: Sequence[int] = CLUSTER_LEVELS,
    pca_dims: int = 50,
    pca_above: int = PCA_ABOVE_ELEMENTS,
    cluster_limit: int = CLUSTER_LIMIT,
) -> FeatureMap:
    """The map and clusters of W_dec's features; the same W_dec and seed give the same result.

    A level asks for at most that many clusters (fewer when there are fewer features, or when the
    dendrogram has equal merge heights at the cut).
    """
    if W_dec.ndim != 2 or W_dec.shape[0] == 0:
        raise ValueError(f"W_dec must be [features, d_in] with at least one feature, got {W_dec.shape}")
    if any(level < 1 for level in levels):
        raise ValueError(f"cluster levels must be positive, got {tuple(levels)}")
    directions = _unit_rows(W_dec)
    has_direction = np.linalg.norm(directions, axis=1) > 0
    xy = np.zeros((W_dec.shape[0], 2), dtype=np.float32)
    clusters = np.full((W_dec.shape[0], len(levels)), -1, dtype=np.int32)
    live = directions[has_direction]
    if live.shape[0]:
        xy[has_direction] = _embedding(live, seed, pca_dims, pca_above)
        xy[~has_direction] = xy[has_direction].mean(axis=0)
        clusters[has_direction] = _clusters(live, levels, seed, cluster_limit)
    return FeatureMap(xy=xy, clusters=clusters, levels=tuple(levels))


def _unit_rows(W_dec: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    rows = W_dec.astype(np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit: npt.NDArray[np.float64] = np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
    return unit


def _embedding(
    directions: npt.NDArray[np.float64], seed: int, pca_dims: int, pca_above: int
) -> npt.NDArray[np.float32]:
    """[n, 2] UMAP coordinates of unit directions [n, d]; tiny inputs get a fixed layout instead."""
    n_points = directions.shape[0]
    if n_points <= 2:
        return np.array([[0.0, 0.0], [1.0, 0.0]], dtype=np.float32)[:n_points]
    if directions.size > pca_above and directions.shape[1] > pca_dims:
        directions = PCA(n_components=min(pca_dims, n_points), random_state=seed).fit_transform(directions)
    import umap  # numba compiles on first import: only the worker that draws maps pays for it

    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(UMAP_NEIGHBOURS, n_points - 1),
        metric="cosine",
        random_state=seed,
        n_jobs=1,  # what a seed implies anyway; said here so UMAP does not warn
        # Spectral initialisation needs more points than components + neighbours; random is always defined.
        init="spectral" if n_points > UMAP_NEIGHBOURS + 2 else "random",
    )
    embedded: npt.NDArray[np.float32] = np.asarray(reducer.fit_transform(directions), dtype=np.float32)
    return embedded


def _clusters(
    directions: npt.NDArray[np.float64], levels: Sequence[int], seed: int, cluster_limit: int
) -> npt.NDArray[np.int32]:
    """[n, len(levels)] nested cluster ids of unit directions [n, d] from one average-linkage dendrogram."""
    n_points = directions.shape[0]
    if n_points == 1:
        return np.zeros((1, len(levels)), dtype=np.int32)
    sampled = np.arange(n_points)
    if n_points > cluster_limit:
        sampled = np.sort(np.random.default_rng(seed).choice(n_points, size=cluster_limit, replace=False))
    tree = scipy.cluster.hierarchy.linkage(directions[sampled], method="average", metric="cosine")
    # Cuts of one tree at falling heights: each cluster of a lower cut lies inside one of a higher cut.
    cuts = [scipy.cluster.hierarchy.fcluster(tree, t=level, criterion="maxclust") - 1 for level in levels]
    sample_ids = np.stack(cuts, axis=1).astype(np.int32)  # [sample, levels]
    if sampled.shape[0] == n_points:
        return sample_ids
    return sample_ids[_nearest_sampled(directions, sampled)]


def _nearest_sampled(directions: npt.NDArray[np.float64], sampled: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """For every direction, the position in sampled of the sampled direction with the highest cosine."""
    rows = torch.from_numpy(directions).float()
    sample_t = rows[torch.from_numpy(sampled)].T.contiguous()
    chunk = max(1, NEIGHBOUR_CHUNK_ELEMENTS // sampled.shape[0])
    nearest = [(rows[start : start + chunk] @ sample_t).argmax(dim=1) for start in range(0, rows.shape[0], chunk)]
    return torch.cat(nearest).numpy()
