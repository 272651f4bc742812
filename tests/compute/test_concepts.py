"""Concept search's compute core: pooled activations against per-text runs, AUROC against scikit-learn, probes and
cosines against their definitions."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from transformer_lens import HookedTransformer

from tests import factories
from workers.compute.concepts import (
    LOGISTIC_MAX_ITER,
    ConceptDataError,
    Pooling,
    accuracy_threshold,
    auroc_per_column,
    direction_cosines,
    feature_ranking,
    logistic_probe,
    mass_mean_probe,
    nearest_features,
    pooled_activations,
    probe_report,
    top_features,
    train_test_split_stratified,
)
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.live import feature_activations_on_text, text_tokens
from workers.compute.sae import SparseAutoencoder, sae_load

D_SAE = 48
# Lengths differ, and not in order, so batches pad and the sort by length must be undone.
TEXTS = [
    "Return the number of items in a container.",
    "Split.",
    "Compile a regular expression and match it against every line of the file, then report the matches.",
    "Joy and gladness fill the hall tonight.",
    "x",
    "Open the file, read it, and close it again when done.",
    "Happy days are here again, my friend.",
]


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return load_language_model(ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir())))


@pytest.fixture(scope="module")
def sae(model: HookedTransformer, tmp_path_factory: pytest.TempPathFactory) -> SparseAutoencoder:
    directory: Path = tmp_path_factory.mktemp("sae")
    return sae_load(factories.sae_lens_write_busy(directory, d_in=model.cfg.d_model, d_sae=D_SAE))


def _pool_rows(values: np.ndarray, pooling: Pooling) -> np.ndarray:
    """[T, d] -> [d] over every token but BOS."""
    pooled: np.ndarray = values[1:].max(axis=0) if pooling == "max" else values[1:].mean(axis=0)
    return pooled


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_pooled_features_equal_each_texts_own_activations_but_bos(model: HookedTransformer, sae: SparseAutoencoder,
                                                                   pooling: Pooling) -> None:
    pooled = pooled_activations(model, sae, factories.TINY_HOOK, TEXTS, pooling, batch_size=3)
    assert pooled.features.shape == (len(TEXTS), D_SAE) and pooled.features.dtype == np.float32
    for feature in (0, 7, 23, 47):
        expected = [_pool_rows(feature_activations_on_text(model, sae, factories.TINY_HOOK, text, feature).values.T,
                               pooling)[0] for text in TEXTS]
        np.testing.assert_allclose(pooled.features[:, feature], expected, rtol=1e-5, atol=1e-6)
    assert (pooled.features > 0).any()
    assert pooled.n_tokens.tolist() == [text_tokens(model, text).shape[1] - 1 for text in TEXTS]


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_pooled_hook_equals_each_texts_own_forward_but_bos(model: HookedTransformer, sae: SparseAutoencoder,
                                                           pooling: Pooling) -> None:
    pooled = pooled_activations(model, sae, factories.TINY_HOOK, TEXTS, pooling, batch_size=4)
    with torch.inference_mode():
        expected = [
            _pool_rows(model.run_with_cache(text_tokens(model, text), names_filter=factories.TINY_HOOK)[1]
                       [factories.TINY_HOOK][0].numpy(), pooling)
            for text in TEXTS
        ]
    assert pooled.hook.shape == (len(TEXTS), sae.d_in) and pooled.hook.dtype == np.float32
    np.testing.assert_allclose(pooled.hook, np.stack(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_batching_does_not_change_the_numbers(model: HookedTransformer, sae: SparseAutoencoder,
                                              pooling: Pooling) -> None:
    one = pooled_activations(model, sae, factories.TINY_HOOK, TEXTS, pooling, batch_size=1)
    four = pooled_activations(model, sae, factories.TINY_HOOK, TEXTS, pooling, batch_size=4)
    np.testing.assert_allclose(four.features, one.features, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(four.hook, one.hook, rtol=1e-5, atol=1e-5)


def test_progress_counts_texts_after_each_batch(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    calls: list[tuple[int, int]] = []
    pooled_activations(model, sae, factories.TINY_HOOK, TEXTS, "max", batch_size=3,
                       progress=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 7), (6, 7), (7, 7)]


def test_no_texts_are_refused(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    with pytest.raises(ConceptDataError, match="no texts"):
        pooled_activations(model, sae, factories.TINY_HOOK, [], "max", batch_size=4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auroc_equals_scikit_learns_with_ties_counted_half(seed: int) -> None:
    generator = np.random.default_rng(seed)
    labels = generator.random(60) < 0.4
    scores = generator.integers(0, 4, size=(60, 6)).astype(np.float32)  # four values: ties everywhere
    scores[:, 5] = 0  # a feature that never fires: every pair tied, AUROC 0.5
    expected = [roc_auc_score(labels, scores[:, column]) for column in range(scores.shape[1])]
    np.testing.assert_allclose(auroc_per_column(scores, labels), expected, rtol=0, atol=1e-12)
    assert auroc_per_column(scores, labels)[5] == 0.5


def test_auroc_needs_both_classes() -> None:
    with pytest.raises(ConceptDataError, match="Both positive and negative"):
        auroc_per_column(np.zeros((4, 2), dtype=np.float32), np.ones(4, dtype=bool))


def _pooled_toy(seed: int = 0, n: int = 40, d_sae: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Sparse non-negative pooled features, feature 3 firing on the positives only."""
    generator = np.random.default_rng(seed)
    labels = np.arange(n) % 2 == 0
    pooled = (generator.random((n, d_sae)) * (generator.random((n, d_sae)) < 0.3)).astype(np.float32)
    pooled[:, 3] = labels * (1 + generator.random(n)).astype(np.float32)
    return pooled, labels


def test_ranking_holds_each_features_class_means_and_firing_frequencies() -> None:
    pooled, labels = _pooled_toy()
    ranking = feature_ranking(pooled, labels)
    for feature in range(pooled.shape[1]):
        positive, negative = pooled[labels, feature], pooled[~labels, feature]
        assert ranking.mean_positive[feature] == pytest.approx(positive.mean())
        assert ranking.mean_negative[feature] == pytest.approx(negative.mean())
        assert ranking.mean_difference[feature] == pytest.approx(positive.mean() - negative.mean(), abs=1e-6)
        assert ranking.frequency_positive[feature] == pytest.approx(np.count_nonzero(positive) / len(positive))
        assert ranking.frequency_negative[feature] == pytest.approx(np.count_nonzero(negative) / len(negative))
        assert ranking.auroc[feature] == pytest.approx(roc_auc_score(labels, pooled[:, feature]))


@pytest.mark.parametrize("by", ["auroc", "mean_difference"])
def test_top_features_come_in_descending_order_of_their_score(by: str) -> None:
    pooled, labels = _pooled_toy()
    pooled[:, 5] = (~labels) * 5.0  # fires on every negative: AUROC 0, far from 0.5, but no detector
    ranking = feature_ranking(pooled, labels)
    scores = ranking.auroc if by == "auroc" else ranking.mean_difference
    top = top_features(ranking, 4, by="auroc" if by == "auroc" else "mean_difference")
    assert top[0] == 3 and 5 not in top.tolist()
    assert top.tolist() == sorted(range(len(scores)), key=lambda feature: -scores[feature])[:4]


def test_mass_mean_direction_is_the_difference_of_class_means() -> None:
    generator = np.random.default_rng(0)
    x = generator.normal(size=(30, 5)).astype(np.float32)
    y = generator.random(30) < 0.5
    probe = mass_mean_probe(x, y)
    np.testing.assert_array_equal(probe.direction, x[y].mean(axis=0) - x[~y].mean(axis=0))
    midpoint = (x[y].mean(axis=0) + x[~y].mean(axis=0)) / 2
    assert probe.score(midpoint[None])[0] == pytest.approx(0, abs=1e-5)


def _separable(seed: int = 0, n: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Two clusters apart along a direction, in coordinates of very different scales."""
    generator = np.random.default_rng(seed)
    y = np.arange(n) % 2 == 0
    x = generator.normal(size=(n, 6)) + np.where(y[:, None], 4.0, -4.0) * np.array([1, -1, 0, 0, 0, 1])
    return (x * np.array([1, 100, 0.01, 1, 10, 1])).astype(np.float32), y


def test_logistic_probe_separates_a_separable_set() -> None:
    x, y = _separable()
    probe = logistic_probe(x, y)
    assert ((probe.score(x) > 0) == y).mean() == 1.0


def test_logistic_probe_direction_scores_in_the_activations_own_space() -> None:
    x, y = _separable()
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=LOGISTIC_MAX_ITER, random_state=0))
    reference.fit(x, y)
    np.testing.assert_allclose(logistic_probe(x, y).score(x), reference.decision_function(x), rtol=1e-4, atol=1e-3)


def test_the_split_is_stratified_disjoint_and_seeded() -> None:
    labels = np.arange(40) % 4 == 0  # 10 positives, 30 negatives
    train, test = train_test_split_stratified(labels, test_fraction=0.25, seed=3)
    assert sorted([*train.tolist(), *test.tolist()]) == list(range(40))
    assert labels[test].sum() / len(test) == pytest.approx(labels.mean(), abs=0.05)
    again = train_test_split_stratified(labels, test_fraction=0.25, seed=3)
    assert again[0].tolist() == train.tolist() and again[1].tolist() == test.tolist()


def test_a_class_of_one_text_cannot_be_split() -> None:
    labels = np.array([True, False, False, False, False])
    with pytest.raises(ConceptDataError, match="at least 2 texts"):
        train_test_split_stratified(labels, test_fraction=0.25, seed=0)


def test_accuracy_threshold_classifies_a_separable_score_exactly() -> None:
    scores = np.array([0, 0, 0.5, 0.2, 2, 3, 1.5], dtype=np.float32)
    labels = scores > 1
    threshold = accuracy_threshold(scores, labels)
    assert ((scores > threshold) == labels).all()


def test_probe_report_scores_probes_and_features_on_held_out_texts() -> None:
    hook, labels = _separable(n=80)
    pooled, _ = _pooled_toy(n=80)
    pooled[:, 3] = labels * 2.0  # the planted feature
    report = probe_report(hook, pooled, labels, test_fraction=0.25, seed=0)
    assert len(report.test) == 20 and not set(report.train.tolist()) & set(report.test.tolist())
    assert report.logistic_test.accuracy == 1.0 and report.logistic_test.auroc == 1.0
    assert report.mass_mean_test.auroc == 1.0
    assert report.best_feature.feature == 3 and report.best_feature.train_auroc == 1.0
    assert report.best_feature.test.accuracy == 1.0 and report.best_feature.test.auroc == 1.0
    assert [point.k for point in report.sparse_probing] == [1, 2, 5, 8]  # k = 10 and 20 capped at d_sae
    assert report.sparse_probing[0].features.tolist() == [3]
    assert report.sparse_probing[0].test.accuracy == 1.0


def test_direction_cosines_equal_a_direct_computation() -> None:
    generator = torch.Generator().manual_seed(0)
    W_enc, W_dec = torch.randn(6, 10, generator=generator), torch.randn(10, 6, generator=generator)
    direction = np.random.default_rng(0).normal(size=6).astype(np.float32)
    features = np.array([7, 0, 4], dtype=np.int64)
    found = direction_cosines(direction, W_dec, W_enc, features)
    target = torch.from_numpy(direction)
    for position, feature in enumerate(features.tolist()):
        decoder = torch.nn.functional.cosine_similarity(W_dec[feature], target, dim=0)
        encoder = torch.nn.functional.cosine_similarity(W_enc[:, feature], target, dim=0)
        assert found.decoder[position] == pytest.approx(float(decoder), abs=1e-6)
        assert found.encoder[position] == pytest.approx(float(encoder), abs=1e-6)


def test_nearest_features_find_a_planted_direction() -> None:
    W_dec = torch.randn(200, 32, generator=torch.Generator().manual_seed(0))
    W_dec[17] = 0  # a dead feature's zero row has cosine 0, not nan
    direction = (3 * W_dec[123] + 0.05 * torch.randn(32, generator=torch.Generator().manual_seed(1))).numpy()
    nearest = nearest_features(direction, W_dec, 5)
    assert nearest.features[0] == 123 and nearest.cosines[0] > 0.99
    assert (np.diff(nearest.cosines) <= 0).all() and len(nearest.features) == 5
    assert not np.isnan(nearest_features(direction, W_dec, 200).cosines).any()
