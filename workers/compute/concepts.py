"""Concept search: from positive and negative example texts to the SAE features that separate them, and the
linear probes fitted beside them on the same hook activations.

Each text is tokenized as typed text is (BOS, then the text), run through the model and the SAE, and pooled over
its tokens but BOS, which counts nowhere, as in the dashboards. A feature's pooled activation is then a score per
text, ranked by AUROC as a one-feature classifier; the probes read the hook's activations pooled the same way, so
a probe direction and a feature's decoder direction live in one space and can be compared.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from torch import Tensor
from transformer_lens import HookedTransformer

from workers.compute.live import hook_input, text_tokens
from workers.compute.sae import SparseAutoencoder

Pooling = Literal["max", "mean"]
RankBy = Literal["auroc", "mean_difference"]
Floats = npt.NDArray[np.float32]
Indices = npt.NDArray[np.int64]
Labels = npt.NDArray[np.bool_]

SPARSE_PROBE_SIZES = (1, 2, 5, 10, 20)  # the k of the sparse-probing curve, capped at d_sae
TEST_FRACTION = 0.25
SPLIT_SEED = 0
LOGISTIC_MAX_ITER = 1000  # lbfgs's default 100 stops short on a few hundred standardized dimensions


class ConceptDataError(ValueError):
    """Example texts that cannot be ranked or probed: none at all, or too few of one class."""


@dataclass(frozen=True)
class PooledActivations:
    """Each text's activations pooled over its tokens but BOS, in the order the texts came."""

    features: Floats  # [n_texts, d_sae]
    hook: Floats  # [n_texts, d_in]: the hook's activations as the SAE reads them (hook_z heads flattened)
    n_tokens: Indices  # [n_texts]: tokens pooled, BOS left out


def pooled_activations(
    model: HookedTransformer,
    sae: SparseAutoencoder,
    hook_name: str,
    texts: Sequence[str],
    pooling: Pooling,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> PooledActivations:
    """Run the model and SAE over texts, batch_size at a time, and pool each text's tokens but BOS.

    Texts are batched in order of length, so a batch pads little; progress(done, total) follows each batch.
    """
    if not texts:
        raise ConceptDataError("There are no texts to run.")
    tokens = [text_tokens(model, text)[0] for text in texts]
    lengths = np.array([len(row) for row in tokens], dtype=np.int64)
    if lengths.min() < 2:
        raise ConceptDataError("The model's context holds only BOS, so no token of a text could be pooled.")
    order = np.argsort(lengths, kind="stable")
    features = np.zeros((len(texts), sae.d_sae), dtype=np.float32)
    hook = np.zeros((len(texts), sae.d_in), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = order[start:start + batch_size]
            batch_tokens, pooled = _padded([tokens[i] for i in batch]), _pooled_mask(lengths[batch])
            hook_in = hook_input(model, sae, hook_name, batch_tokens)  # [b, T, d_in]
            pooled = pooled.to(hook_in.device)
            features[batch] = _pool(sae.encode(hook_in), pooled, pooling)
            hook[batch] = _pool(hook_in, pooled, pooling)
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
    return PooledActivations(features=features, hook=hook, n_tokens=lengths - 1)


def _padded(rows: list[Tensor]) -> Tensor:
    """[b, T]: rows padded on the right with their own BOS; causal attention keeps padding out of real tokens."""
    width = max(len(row) for row in rows)
    padded = torch.full((len(rows), width), int(rows[0][0]), dtype=torch.int64)
    for index, row in enumerate(rows):
        padded[index, :len(row)] = row
    return padded


def _pooled_mask(lengths: Indices) -> Tensor:
    """[b, T] True on the tokens that are pooled: every real token but the first (BOS)."""
    positions = torch.arange(int(lengths.max()))
    return (positions >= 1) & (positions < torch.from_numpy(lengths)[:, None])


def _pool(values: Tensor, mask: Tensor, pooling: Pooling) -> Floats:
    """[b, T, d] -> [b, d] float32 over the masked tokens; torch.where, so padding's values never leak in."""
    values, mask3 = values.float(), mask[..., None]
    if pooling == "max":
        pooled = torch.where(mask3, values, -torch.inf).amax(dim=1)
    else:
        pooled = torch.where(mask3, values, 0.0).sum(dim=1) / mask.sum(dim=1, keepdim=True)
    result: Floats = pooled.cpu().numpy()
    return result


def _labels_check(labels: Labels, n: int) -> None:
    if labels.shape != (n,):
        raise ConceptDataError(f"There are {labels.shape[0]} labels for {n} texts.")
    if labels.all() or not labels.any():
        raise ConceptDataError("Both positive and negative texts are needed; one of the two sets is empty.")


def auroc_per_column(scores: npt.NDArray[np.floating], labels: Labels) -> npt.NDArray[np.float64]:
    """[n, k] scores, [n] labels -> [k]: each column's exact AUROC, ties counted half.

    The Mann-Whitney U from average ranks is exactly the share of (positive, negative) pairs that the column
    orders right, a tie counting half, and it ranks all columns at once instead of sweeping thresholds.
    """
    _labels_check(labels, scores.shape[0])
    n_positive = int(labels.sum())
    n_negative = len(labels) - n_positive
    ranks = rankdata(scores, method="average", axis=0)  # [n, k]
    u_statistic = ranks[labels].sum(axis=0) - n_positive * (n_positive + 1) / 2
    auroc: npt.NDArray[np.float64] = u_statistic / (n_positive * n_negative)
    return auroc


@dataclass(frozen=True)
class FeatureRanking:
    """Each feature as a one-feature classifier of the texts: arrays [d_sae]."""

    auroc: npt.NDArray[np.float64]
    mean_positive: Floats
    mean_negative: Floats
    mean_difference: Floats  # mean_positive - mean_negative
    frequency_positive: Floats  # share of positive texts where the pooled activation is above 0
    frequency_negative: Floats


def feature_ranking(pooled: Floats, labels: Labels) -> FeatureRanking:
    """Rank the features of pooled [n_texts, d_sae] by how they separate positive texts from negative ones."""
    auroc = auroc_per_column(pooled, labels)
    positive, negative = pooled[labels], pooled[~labels]
    mean_positive, mean_negative = positive.mean(axis=0), negative.mean(axis=0)
    return FeatureRanking(
        auroc=auroc,
        mean_positive=mean_positive,
        mean_negative=mean_negative,
        mean_difference=mean_positive - mean_negative,
        frequency_positive=(positive > 0).mean(axis=0, dtype=np.float32),
        frequency_negative=(negative > 0).mean(axis=0, dtype=np.float32),
    )


def top_features(ranking: FeatureRanking, k: int, by: RankBy = "auroc") -> Indices:
    """The k features that fire more on positive texts, the highest AUROC (or mean difference) first.

    Descending, not by distance from 0.5: a feature that fires on the negatives is no detector of the concept.
    A stable sort keeps the lower feature index first on ties.
    """
    scores = ranking.auroc if by == "auroc" else ranking.mean_difference
    order: Indices = np.argsort(-scores, kind="stable")[:k].astype(np.int64)
    return order


@dataclass(frozen=True)
class LinearProbe:
    """score(x) = x @ direction + bias, positive for the positive class; direction in the hook's space."""

    direction: Floats  # [d_in]
    bias: float

    def score(self, x: Floats) -> Floats:
        """[n, d_in] -> [n]."""
        scores: Floats = (x @ self.direction + self.bias).astype(np.float32)
        return scores


def mass_mean_probe(x_train: Floats, y_train: Labels) -> LinearProbe:
    """The difference of class means, cut at the midpoint of the projected class means.

    Unlike logistic regression, which finds whatever direction best separates the classes, this is the direction
    the concept moves the activations in, so it is the one to compare with feature directions.
    """
    _labels_check(y_train, x_train.shape[0])
    mean_positive, mean_negative = x_train[y_train].mean(axis=0), x_train[~y_train].mean(axis=0)
    direction = (mean_positive - mean_negative).astype(np.float32)
    midpoint = float((mean_positive + mean_negative) @ direction) / 2
    return LinearProbe(direction=direction, bias=-midpoint)


def logistic_probe(x_train: Floats, y_train: Labels, seed: int = SPLIT_SEED) -> LinearProbe:
    """Logistic regression on standardized activations, its direction mapped back to the activations' own space.

    Standardizing lets one regularization strength suit hooks of any scale; as it is affine, the fitted
    w·(x - m)/s + b is the probe (w/s)·x + b - m·(w/s) in the original space.
    """
    _labels_check(y_train, x_train.shape[0])
    scaler = StandardScaler().fit(x_train)
    classifier = LogisticRegression(max_iter=LOGISTIC_MAX_ITER, random_state=seed)
    classifier.fit(scaler.transform(x_train), y_train)
    direction = (classifier.coef_[0] / scaler.scale_).astype(np.float32)
    bias = float(classifier.intercept_[0]) - float(scaler.mean_ @ direction)
    return LinearProbe(direction=direction, bias=bias)


@dataclass(frozen=True)
class HeldOutScore:
    """A classifier's accuracy and AUROC on the held-out texts."""

    accuracy: float
    auroc: float


@dataclass(frozen=True)
class BestFeature:
    """The feature with the best train AUROC, its threshold chosen on train, scored on the held-out texts."""

    feature: int
    threshold: float  # a text is positive when the feature's pooled activation is above it
    train_auroc: float
    test: HeldOutScore


@dataclass(frozen=True)
class SparseProbePoint:
    """Logistic regression on the k features of best train AUROC, scored on the held-out texts."""

    k: int
    features: Indices  # [k], best train AUROC first
    probe: LinearProbe  # over the k features' pooled activations, in that order
    test: HeldOutScore


@dataclass(frozen=True)
class ProbeReport:
    """Probes beside features on one stratified, seeded train/test split."""

    train: Indices  # [n_train] text indices
    test: Indices  # [n_test]
    mass_mean: LinearProbe
    mass_mean_test: HeldOutScore
    logistic: LinearProbe
    logistic_test: HeldOutScore
    best_feature: BestFeature
    sparse_probing: list[SparseProbePoint]  # one per k, increasing


def probe_report(
    hook: Floats,
    features: Floats,
    labels: Labels,
    *,
    test_fraction: float = TEST_FRACTION,
    seed: int = SPLIT_SEED,
    sparse_probe_sizes: Sequence[int] = SPARSE_PROBE_SIZES,
) -> ProbeReport:
    """Fit the probes on hook [n, d_in] and the feature classifiers on features [n, d_sae] of the train texts;
    score them all on the same held-out texts, so their numbers compare."""
    train, test = train_test_split_stratified(labels, test_fraction=test_fraction, seed=seed)
    mass_mean = mass_mean_probe(hook[train], labels[train])
    logistic = logistic_probe(hook[train], labels[train], seed=seed)
    train_auroc = auroc_per_column(features[train], labels[train])
    ranked = np.argsort(-train_auroc, kind="stable").astype(np.int64)
    sizes = sorted({min(k, features.shape[1]) for k in sparse_probe_sizes})
    return ProbeReport(
        train=train,
        test=test,
        mass_mean=mass_mean,
        mass_mean_test=_held_out(mass_mean.score(hook[test]), labels[test], threshold=0.0),
        logistic=logistic,
        logistic_test=_held_out(logistic.score(hook[test]), labels[test], threshold=0.0),
        best_feature=_best_feature(features[:, ranked[0]], labels, train, test, float(train_auroc[ranked[0]]),
                                   int(ranked[0])),
        sparse_probing=[_sparse_probe(features[:, ranked[:k]], labels, train, test, ranked[:k], seed)
                        for k in sizes],
    )


def train_test_split_stratified(labels: Labels, *, test_fraction: float, seed: int) -> tuple[Indices, Indices]:
    """Train and test text indices, each class split in proportion, the same for the same seed."""
    _labels_check(labels, labels.shape[0])
    if min(int(labels.sum()), int((~labels).sum())) < 2:
        raise ConceptDataError("Each set needs at least 2 texts: one to train on and one to test on.")
    try:
        train, test = train_test_split(np.arange(len(labels), dtype=np.int64), test_size=test_fraction,
                                       random_state=seed, stratify=labels)
    except ValueError as error:  # sklearn's message names the sizes that do not fit
        raise ConceptDataError(f"The texts cannot be split into train and test sets: {error}") from error
    for name, part in (("training", train), ("test", test)):
        if labels[part].all() or not labels[part].any():
            raise ConceptDataError(f"The {name} set would hold texts of one class only; add texts of the other.")
    return np.sort(train), np.sort(test)


def _held_out(scores: Floats, labels: Labels, threshold: float) -> HeldOutScore:
    accuracy = float(((scores > threshold) == labels).mean())
    return HeldOutScore(accuracy=accuracy, auroc=float(auroc_per_column(scores[:, None], labels)[0]))


def _best_feature(values: Floats, labels: Labels, train: Indices, test: Indices, train_auroc: float,
                  feature: int) -> BestFeature:
    threshold = accuracy_threshold(values[train], labels[train])
    return BestFeature(feature=feature, threshold=threshold, train_auroc=train_auroc,
                       test=_held_out(values[test], labels[test], threshold))


def accuracy_threshold(scores: Floats, labels: Labels) -> float:
    """The cut that classifies scores [n] most accurately as "positive when above it" (the lowest such cut).

    A pooled feature is mostly 0 and skewed, so the midpoint of its class means, fine for a probe, would
    misplace its cut; every distinct score, and one below them all, is tried instead.
    """
    cuts = np.concatenate([[scores.min() - 1], np.unique(scores)])
    negatives_at_or_below = np.searchsorted(np.sort(scores[~labels]), cuts, side="right")
    positives_above = labels.sum() - np.searchsorted(np.sort(scores[labels]), cuts, side="right")
    return float(cuts[np.argmax(negatives_at_or_below + positives_above)])


def _sparse_probe(values: Floats, labels: Labels, train: Indices, test: Indices, features: Indices,
                  seed: int) -> SparseProbePoint:
    probe = logistic_probe(values[train], labels[train], seed=seed)
    return SparseProbePoint(k=len(features), features=features, probe=probe,
                            test=_held_out(probe.score(values[test]), labels[test], threshold=0.0))


@dataclass(frozen=True)
class DirectionCosines:
    """Cosines of one direction with some features' decoder rows and encoder columns: arrays [f]."""

    features: Indices
    decoder: Floats
    encoder: Floats


def direction_cosines(direction: Floats, W_dec: Tensor, W_enc: Tensor, features: Indices) -> DirectionCosines:
    """direction [d_in] against W_dec [d_sae, d_in]'s rows and W_enc [d_in, d_sae]'s columns of features [f]."""
    index = torch.from_numpy(features).to(W_dec.device)
    return DirectionCosines(
        features=features,
        decoder=_cosines(direction, W_dec.index_select(0, index)),
        encoder=_cosines(direction, W_enc.index_select(1, index.to(W_enc.device)).T),
    )


@dataclass(frozen=True)
class NearestFeatures:
    """The features whose decoder directions lie closest to a direction, the highest cosine first."""

    features: Indices  # [n]
    cosines: Floats  # [n]


def nearest_features(direction: Floats, W_dec: Tensor, n: int) -> NearestFeatures:
    """The n features of highest decoder cosine with direction [d_in], across the whole SAE (W_dec [d_sae, d_in])."""
    cosines = torch.from_numpy(_cosines(direction, W_dec))
    best = cosines.sort(descending=True, stable=True).indices[:n]
    return NearestFeatures(features=best.numpy().astype(np.int64), cosines=cosines[best].numpy())


def _cosines(direction: Floats, rows: Tensor) -> Floats:
    """[m, d] rows -> [m] cosines with direction [d], in float32; a zero row has cosine 0."""
    rows = rows.float()
    target = torch.from_numpy(np.asarray(direction, dtype=np.float32)).to(rows.device)
    norms = rows.norm(dim=1) * target.norm()
    cosines: Floats = ((rows @ target) / norms.clamp_min(torch.finfo(torch.float32).tiny)).cpu().numpy()
    return cosines


@dataclass(frozen=True)
class ConceptSearchResult:
    """Everything a concept search answers, texts in the order given: the positives, then the negatives."""

    labels: Labels  # [n_texts] True for a positive text
    pooled: PooledActivations
    ranking: FeatureRanking  # every feature
    top: Indices  # [k] the features of highest AUROC, best first
    top_scores: Floats  # [n_texts, k] each text's pooled activation of each top feature
    probes: ProbeReport
    mass_mean_cosines: DirectionCosines  # the mass-mean probe's direction against the top features
    logistic_cosines: DirectionCosines
    mass_mean_nearest: NearestFeatures  # the features nearest each probe direction across the whole SAE
    logistic_nearest: NearestFeatures


def concept_search_compute(
    model: HookedTransformer,
    sae: SparseAutoencoder,
    hook_name: str,
    positives: Sequence[str],
    negatives: Sequence[str],
    pooling: Pooling,
    *,
    batch_size: int = 16,
    top_k: int = 50,
    nearest: int = 10,
    progress: Callable[[int, int], None] | None = None,
) -> ConceptSearchResult:
    """One model and SAE pass over both sets, then the ranking, the probes and their cosines with the features."""
    labels = np.array([True] * len(positives) + [False] * len(negatives))
    _labels_check(labels, labels.shape[0])
    pooled = pooled_activations(model, sae, hook_name, [*positives, *negatives], pooling, batch_size, progress)
    ranking = feature_ranking(pooled.features, labels)
    top = top_features(ranking, min(top_k, sae.d_sae))
    probes = probe_report(pooled.hook, pooled.features, labels)
    return ConceptSearchResult(
        labels=labels,
        pooled=pooled,
        ranking=ranking,
        top=top,
        top_scores=pooled.features[:, top],
        probes=probes,
        mass_mean_cosines=direction_cosines(probes.mass_mean.direction, sae.W_dec, sae.W_enc, top),
        logistic_cosines=direction_cosines(probes.logistic.direction, sae.W_dec, sae.W_enc, top),
        mass_mean_nearest=nearest_features(probes.mass_mean.direction, sae.W_dec, nearest),
        logistic_nearest=nearest_features(probes.logistic.direction, sae.W_dec, nearest),
    )
