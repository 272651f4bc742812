"""Detectors: a linear score on a text's pooled activations (chosen SAE features, or a probe direction at the hook),
a threshold that decides, and the per-token contributions that explain the score.

A detector scores text as the concept search that chose it did: each value (a feature's activation, or the hook's
activation) is pooled over the text's tokens but BOS, and the score is weights · pooled + bias. Each token's
contribution is weights · its own values; with mean pooling the score is the mean of the contributions plus the bias,
with max pooling each value is taken at its own strongest token, which the answer names per feature.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import roc_auc_score, roc_curve
from transformer_lens import HookedTransformer

from workers.compute.concepts import (
    ConceptSearchResult,
    Floats,
    Indices,
    Labels,
    LinearProbe,
    Pooling,
    accuracy_threshold,
)
from workers.compute.live import hook_input, text_tokens
from workers.compute.sae import SparseAutoencoder

DetectorKind = Literal["features", "probe"]
# ROC curves are stored and drawn with at most this many points (sklearn drops the collinear ones first).
ROC_MAX_POINTS = 200


class DetectorError(ValueError):
    """A detector that cannot be applied: features the SAE lacks, weights of the wrong size."""


@dataclass(frozen=True)
class DetectorSpec:
    kind: DetectorKind
    pooling: Pooling
    features: Indices  # [k] SAE features (kind "features"); empty for a probe
    weights: Floats  # [k] one per feature, or [d_in] the probe's direction
    bias: float
    threshold: float  # a text is detected when its score is above this


@dataclass(frozen=True)
class TextDetection:
    score: float
    detected: bool
    token_ids: Indices  # [T], BOS first
    contributions: Floats  # [T] weights · each token's values; 0 at BOS, which counts nowhere
    strongest_token: Indices  # [k] per feature the token whose activation max pooling took (kind "features")


@dataclass(frozen=True)
class DetectorEvaluation:
    """How a detector does on labelled texts."""

    n_positive: int
    n_negative: int
    accuracy: float
    precision: float  # detected positives / detected; 0 when nothing is detected
    recall: float  # detected positives / positives
    auroc: float
    roc_fpr: Floats  # [p] the ROC curve's points, from (0, 0) to (1, 1)
    roc_tpr: Floats


@dataclass(frozen=True)
class DetectorCandidate:
    """A detector a concept search proposes, evaluated on the search's held-out texts."""

    name: str  # "best feature", "top 5 features", "mass-mean probe", "logistic probe"
    spec: DetectorSpec
    evaluation: DetectorEvaluation


def detector_check(spec: DetectorSpec, sae: SparseAutoencoder) -> None:
    """DetectorError unless spec fits sae: features it has, one weight per feature, or a probe of width d_in."""
    if spec.kind == "features":
        if spec.features.size == 0 or spec.weights.shape != spec.features.shape:
            raise DetectorError("A feature detector needs one weight per feature, and at least one feature.")
        if int(spec.features.min()) < 0 or int(spec.features.max()) >= sae.d_sae:
            raise DetectorError(f"The SAE has features 0 to {sae.d_sae - 1}; the detector names others.")
    elif spec.weights.shape != (sae.d_in,):
        raise DetectorError(f"A probe detector's direction needs {sae.d_in} values; it has {spec.weights.shape[0]}.")


def detect(model: HookedTransformer, sae: SparseAutoencoder, hook_name: str, texts: Sequence[str],
           spec: DetectorSpec) -> list[TextDetection]:
    """Score each text, one forward each: its score, its decision and each token's contribution."""
    detector_check(spec, sae)
    weights = torch.from_numpy(spec.weights.astype(np.float32))
    index = torch.from_numpy(spec.features)
    detections = []
    with torch.inference_mode():
        for text in texts:
            tokens = text_tokens(model, text)
            hook_in = hook_input(model, sae, hook_name, tokens)[0]  # [T, d_in]
            values = (sae.encode(hook_in)[:, index.to(hook_in.device)] if spec.kind == "features" else hook_in)
            detections.append(_detection(tokens[0].numpy(), values.float().cpu(), weights, spec))
    return detections


def _detection(token_ids: Indices, values: torch.Tensor, weights: torch.Tensor, spec: DetectorSpec) -> TextDetection:
    """values [T, k] (or [T, d_in]) of one text, BOS first."""
    counted = values[1:]
    contributions = np.concatenate([[0.0], (counted @ weights).numpy()]).astype(np.float32)
    if spec.pooling == "max":
        strongest = counted.argmax(dim=0) + 1  # [k]
        pooled = counted.amax(dim=0)
    else:
        strongest = torch.zeros(0, dtype=torch.int64)
        pooled = counted.mean(dim=0)
    score = float(pooled @ weights) + spec.bias
    return TextDetection(score=score, detected=score > spec.threshold, token_ids=token_ids.astype(np.int64),
                         contributions=contributions,
                         strongest_token=(strongest.numpy().astype(np.int64) if spec.kind == "features"
                                          else np.zeros(0, dtype=np.int64)))


def detector_evaluation(scores: Floats, labels: Labels, threshold: float) -> DetectorEvaluation:
    """Accuracy, precision, recall at the threshold, and the AUROC and ROC curve of scores [n] against labels [n]."""
    detected = scores > threshold
    true_positive = int((detected & labels).sum())
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=True)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(len(fpr), ROC_MAX_POINTS)).round().astype(np.int64))
    return DetectorEvaluation(
        n_positive=int(labels.sum()),
        n_negative=int((~labels).sum()),
        accuracy=float((detected == labels).mean()),
        precision=true_positive / int(detected.sum()) if detected.any() else 0.0,
        recall=true_positive / int(labels.sum()),
        auroc=float(roc_auc_score(labels, scores)),
        roc_fpr=fpr[keep].astype(np.float32),
        roc_tpr=tpr[keep].astype(np.float32),
    )


def detector_candidates(result: ConceptSearchResult, pooling: Pooling) -> list[DetectorCandidate]:
    """The best feature, each sparse probe over the top-k features, and both probes at the hook: each as a detector
    whose threshold is the most accurate cut on the training texts, evaluated on the search's held-out texts (the
    split nothing was fitted on). A regularized probe's own cut (0) can sit off a small set's classes."""
    report, features, hook = result.probes, result.pooled.features, result.pooled.hook
    best = report.best_feature
    candidates = [_candidate("best feature", "features", pooling, np.array([best.feature]),
                             LinearProbe(np.ones(1, dtype=np.float32), 0.0), features[:, [best.feature]], result)]
    for point in report.sparse_probing:
        name = f"top {point.k} feature{'s' if point.k > 1 else ''} (logistic)"
        candidates.append(_candidate(name, "features", pooling, point.features, point.probe,
                                     features[:, point.features], result))
    for name, probe in (("mass-mean probe", report.mass_mean), ("logistic probe", report.logistic)):
        candidates.append(_candidate(name, "probe", pooling, np.zeros(0, dtype=np.int64), probe, hook, result))
    return candidates


def _midway_above(cut: float, scores: Floats) -> float:
    """Halfway from cut to the next score above it: the same decisions on these scores, and a margin for the
    rounding of a text run alone rather than in a padded batch."""
    above = scores[scores > cut]
    return (cut + float(above.min())) / 2 if above.size else cut


def _candidate(name: str, kind: DetectorKind, pooling: Pooling, features: npt.NDArray[np.integer],
               probe: LinearProbe, values: Floats, result: ConceptSearchResult) -> DetectorCandidate:
    """values [n_texts, k or d_in]: every text's pooled values, which the probe scores."""
    train, test, labels = result.probes.train, result.probes.test, result.labels
    scores = probe.score(values)
    threshold = _midway_above(accuracy_threshold(scores[train], labels[train]), scores[train])
    spec = DetectorSpec(kind=kind, pooling=pooling, features=features.astype(np.int64), weights=probe.direction,
                        bias=probe.bias, threshold=threshold)
    return DetectorCandidate(name=name, spec=spec,
                             evaluation=detector_evaluation(scores[test], labels[test], threshold))
