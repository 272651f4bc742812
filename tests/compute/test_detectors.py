"""Detectors on the tiny model: a text's score is the sum it claims (weights x pooled activations + bias, from a plain
forward), the per-token contributions add up to it, the evaluation equals scikit-learn's, and a concept search's
candidates are scored on its held-out texts."""

import numpy as np
import pytest
import torch
from sklearn.metrics import precision_score, recall_score, roc_auc_score
from transformer_lens import HookedTransformer

from tests import factories
from tests.compute.test_concepts import D_SAE, TEXTS
from tests.support.tiny_model import TINY_HOOK, tiny_model_source
from workers.compute.concepts import Pooling, concept_search_compute
from workers.compute.detectors import (
    DetectorError,
    DetectorSpec,
    detect,
    detector_candidates,
    detector_evaluation,
)
from workers.compute.language_model import load_language_model
from workers.compute.live import text_tokens
from workers.compute.sae import SparseAutoencoder, sae_load

FEATURES = np.array([3, 17, 40], dtype=np.int64)


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return load_language_model(tiny_model_source())


@pytest.fixture(scope="module")
def sae(model: HookedTransformer, tmp_path_factory: pytest.TempPathFactory) -> SparseAutoencoder:
    return sae_load(factories.sae_lens_write_busy(tmp_path_factory.mktemp("sae"), d_in=model.cfg.d_model, d_sae=D_SAE))
WEIGHTS = np.array([0.5, -1.25, 2.0], dtype=np.float32)


def _values(model: HookedTransformer, sae: SparseAutoencoder, text: str) -> tuple[np.ndarray, np.ndarray]:
    """(every feature's activation [T, d_sae], the hook's activation [T, d_in]) from a plain forward, BOS first."""
    with torch.inference_mode():
        _, cache = model.run_with_cache(text_tokens(model, text), names_filter=TINY_HOOK)
        hook = cache[TINY_HOOK][0]
        return sae.encode(hook).numpy(), hook.numpy()


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_a_feature_detectors_score_is_the_weighted_sum_of_pooled_activations(
        model: HookedTransformer, sae: SparseAutoencoder, pooling: Pooling) -> None:
    spec = DetectorSpec(kind="features", pooling=pooling, features=FEATURES, weights=WEIGHTS, bias=0.3, threshold=0.1)
    for text, found in zip(TEXTS[:4], detect(model, sae, TINY_HOOK, TEXTS[:4], spec), strict=True):
        acts = _values(model, sae, text)[0][1:, FEATURES]  # BOS counts nowhere
        pooled = acts.max(axis=0) if pooling == "max" else acts.mean(axis=0)
        assert found.score == pytest.approx(float(pooled @ WEIGHTS) + 0.3, abs=1e-5)
        assert found.detected == (found.score > 0.1)
        np.testing.assert_allclose(found.contributions[1:], acts @ WEIGHTS, atol=1e-5)
        assert found.contributions[0] == 0.0
        if pooling == "mean":
            assert found.score == pytest.approx(float(found.contributions[1:].mean()) + 0.3, abs=1e-5)
        else:  # each feature's value is read at the token named for it
            np.testing.assert_allclose(acts[found.strongest_token - 1, np.arange(3)], acts.max(axis=0))


def test_a_probe_detector_scores_the_pooled_hook_activation(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    direction = np.random.default_rng(0).normal(size=sae.d_in).astype(np.float32)
    spec = DetectorSpec(kind="probe", pooling="mean", features=np.zeros(0, dtype=np.int64), weights=direction,
                        bias=-1.0, threshold=0.0)
    found = detect(model, sae, TINY_HOOK, [TEXTS[0]], spec)[0]
    hook = _values(model, sae, TEXTS[0])[1][1:]
    assert found.score == pytest.approx(float(hook.mean(axis=0) @ direction) - 1.0, rel=1e-4)
    np.testing.assert_allclose(found.contributions[1:], hook @ direction, rtol=1e-4, atol=1e-4)


def test_detectors_that_do_not_fit_the_sae_are_refused(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    wrong = [
        DetectorSpec("features", "max", np.array([sae.d_sae]), np.ones(1, dtype=np.float32), 0.0, 0.0),
        DetectorSpec("features", "max", np.array([1, 2]), np.ones(1, dtype=np.float32), 0.0, 0.0),
        DetectorSpec("probe", "max", np.zeros(0, dtype=np.int64), np.ones(3, dtype=np.float32), 0.0, 0.0),
    ]
    for spec in wrong:
        with pytest.raises(DetectorError):
            detect(model, sae, TINY_HOOK, [TEXTS[0]], spec)


def test_the_evaluation_equals_scikit_learns() -> None:
    generator = np.random.default_rng(1)
    labels = generator.random(200) < 0.4
    scores = (labels * 0.8 + generator.normal(size=200)).round(1).astype(np.float32)  # rounded: ties
    evaluation = detector_evaluation(scores, labels, threshold=0.3)
    detected = scores > 0.3
    assert evaluation.precision == pytest.approx(precision_score(labels, detected))
    assert evaluation.recall == pytest.approx(recall_score(labels, detected))
    assert evaluation.accuracy == pytest.approx(float((detected == labels).mean()))
    assert evaluation.auroc == pytest.approx(roc_auc_score(labels, scores))
    assert (evaluation.n_positive, evaluation.n_negative) == (int(labels.sum()), int((~labels).sum()))
    ends = (evaluation.roc_fpr[0], evaluation.roc_tpr[0], evaluation.roc_fpr[-1], evaluation.roc_tpr[-1])
    assert ends == (0, 0, 1, 1)
    assert (np.diff(evaluation.roc_fpr) >= 0).all() and (np.diff(evaluation.roc_tpr) >= 0).all()


def test_a_search_proposes_detectors_scored_on_its_held_out_texts(model: HookedTransformer,
                                                                   sae: SparseAutoencoder) -> None:
    positives = [f"{text} Joy and gladness." for text in TEXTS] + ["Happy, happy day."]
    negatives = [f"{text} Open the file." for text in TEXTS] + ["Close the stream."]
    result = concept_search_compute(model, sae, TINY_HOOK, positives, negatives, "max", top_k=10)
    candidates = detector_candidates(result, "max")
    names = [candidate.name for candidate in candidates]
    assert names[0] == "best feature" and names[-2:] == ["mass-mean probe", "logistic probe"]
    assert [name for name in names if name.startswith("top ")] == [
        f"top {point.k} feature{'s' if point.k > 1 else ''} (logistic)" for point in result.probes.sparse_probing]
    test = result.probes.test
    for candidate in candidates:
        assert candidate.evaluation.n_positive + candidate.evaluation.n_negative == test.size
    # The saved detector, applied to the held-out texts themselves, gives the scores it was evaluated with.
    texts = [*positives, *negatives]
    best = candidates[0]
    found = detect(model, sae, TINY_HOOK, [texts[i] for i in test], best.spec)
    scores = np.array([detection.score for detection in found], dtype=np.float32)
    again = detector_evaluation(scores, result.labels[test], best.spec.threshold)
    assert again.auroc == pytest.approx(best.evaluation.auroc)
    assert again.accuracy == pytest.approx(best.evaluation.accuracy)
    # Every threshold is the most accurate cut of the training texts' scores.
    train = result.probes.train
    for candidate in candidates:
        train_texts = [texts[i] for i in train]
        scored = np.array([d.score for d in detect(model, sae, TINY_HOOK, train_texts, candidate.spec)])
        accuracy = ((scored > candidate.spec.threshold) == result.labels[train]).mean()
        cuts = np.concatenate([[scored.min() - 1], np.unique(scored)])
        assert accuracy == pytest.approx(max(((scored > cut) == result.labels[train]).mean() for cut in cuts),
                                         abs=1e-6)
