"""Concept searches and detectors on a worker: the SAEs' model run over the example texts, answered as plain JSON.

A small search runs on the live queue while the web request waits (concept_search_answer); a large one is a stored
job on the gpu queue (concept_search_execute) whose progress and result go through atlas.concepts.services.
"""

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from transformer_lens import HookedTransformer

from atlas.concepts import services
from atlas.datasets.models import Dataset
from atlas.datasets.selectors import dataset_tokens
from atlas.saes.models import Sae
from workers.compute.concepts import ConceptDataError, ConceptSearchResult, Pooling, concept_search_compute
from workers.compute.detectors import (
    DetectorCandidate,
    DetectorError,
    DetectorEvaluation,
    DetectorSpec,
    TextDetection,
    detect,
    detector_candidates,
    detector_evaluation,
)
from workers.compute.live import LiveTextError
from workers.loaded import language_model_loaded, sae_loaded, worker_device

logger = logging.getLogger(__name__)

# Features listed per SAE, and the strongest of them whose per-text scores the chart draws.
TOP_FEATURES = 50
CHART_FEATURES = 10
BATCH_TEXTS = 16
# Seed of the dataset sequences drawn as negatives, so the same request draws the same ones.
DATASET_SEED = 0


def concept_search_answer(request: dict[str, Any]) -> dict[str, Any]:
    """A search while the request waits: {"results": [per SAE]} or {"error": message}."""
    try:
        return {"results": _searched(request, progress=None)}
    except (ConceptDataError, LiveTextError) as error:
        return {"error": str(error)}


def concept_search_execute(search_id: str) -> None:
    """A stored search's job: progress as texts are run, then its result, or the error that stopped it."""
    search = services.concept_search_start(search_id=search_id)
    if search is None:
        logger.info("concept search %s is gone or done with", search_id)
        return
    total = len(search.sae_ids) * search.n_texts

    def progress_at(offset: int) -> Callable[[int, int], None]:
        return lambda done, _: services.concept_search_progress(search_id=search_id, done=offset + done, total=total)

    try:
        results = _searched(search.request, progress=progress_at)
    except (ConceptDataError, LiveTextError) as error:
        services.concept_search_fail(search_id=search_id, message=str(error))
        return
    except Exception as error:
        services.concept_search_fail(search_id=search_id, message=f"The worker failed: {error}")
        raise
    services.concept_search_finish(search_id=search_id, results=results)


def _searched(request: dict[str, Any],
              progress: Callable[[int], Callable[[int, int], None]] | None) -> list[dict[str, Any]]:
    saes = list(Sae.objects.select_related("language_model").filter(pk__in=request["sae_ids"]))
    if len(saes) != len(request["sae_ids"]):
        raise ConceptDataError("An SAE of this search no longer exists.")
    device = worker_device()
    model = language_model_loaded(saes[0].language_model, device)
    negatives = [*request["negatives"], *_dataset_negatives(model, request)]
    results = []
    for position, sae in enumerate(sorted(saes, key=lambda found: request["sae_ids"].index(found.pk))):
        offset = position * (len(request["positives"]) + len(negatives))
        result = concept_search_compute(
            model, sae_loaded(sae, device), sae.hook_name, request["positives"], negatives, request["pooling"],
            batch_size=BATCH_TEXTS, top_k=TOP_FEATURES, progress=progress(offset) if progress else None)
        results.append(_result_payload(sae, result, request["pooling"]))
    return results


def _dataset_negatives(model: HookedTransformer, request: dict[str, Any]) -> list[str]:
    """n sequences of the dataset, drawn with a fixed seed, each cut to `tokens` tokens and decoded to text."""
    if request.get("dataset_id") is None:
        return []
    dataset = Dataset.objects.filter(pk=request["dataset_id"]).first()
    if dataset is None or model.tokenizer is None:
        raise ConceptDataError("The dataset named for the negatives no longer exists.")
    tokens = dataset_tokens(dataset)
    count = min(int(request["dataset_negatives"]), tokens.shape[0])
    rows = np.random.default_rng(DATASET_SEED).choice(tokens.shape[0], size=count, replace=False)
    width = int(request["dataset_tokens"])
    return [str(model.tokenizer.decode(tokens[row, 1:1 + width].tolist())) for row in np.sort(rows)]


def _result_payload(sae: Sae, result: ConceptSearchResult, pooling: Pooling) -> dict[str, Any]:
    ranking, probes = result.ranking, result.probes
    top = result.top.tolist()
    return {
        "saeId": sae.pk,
        "nPositive": int(result.labels.sum()),
        "nNegative": int((~result.labels).sum()),
        "labels": result.labels.tolist(),
        "nTokens": result.pooled.n_tokens.tolist(),
        "features": [
            {"index": index, "auroc": float(ranking.auroc[index]),
             "meanPositive": float(ranking.mean_positive[index]), "meanNegative": float(ranking.mean_negative[index]),
             "meanDifference": float(ranking.mean_difference[index]),
             "frequencyPositive": float(ranking.frequency_positive[index]),
             "frequencyNegative": float(ranking.frequency_negative[index])}
            for index in top
        ],
        "scores": result.top_scores[:, :CHART_FEATURES].astype(float).round(5).tolist(),
        "probes": {
            "nTrain": int(probes.train.size), "nTest": int(probes.test.size),
            "massMean": _probe_payload(probes.mass_mean_test.accuracy, probes.mass_mean_test.auroc,
                                       result, "mass_mean"),
            "logistic": _probe_payload(probes.logistic_test.accuracy, probes.logistic_test.auroc, result, "logistic"),
            "bestFeature": {"index": probes.best_feature.feature, "threshold": probes.best_feature.threshold,
                            "trainAuroc": probes.best_feature.train_auroc,
                            "accuracy": probes.best_feature.test.accuracy, "auroc": probes.best_feature.test.auroc},
            "sparseProbing": [{"k": point.k, "features": point.features.tolist(), "accuracy": point.test.accuracy,
                               "auroc": point.test.auroc} for point in probes.sparse_probing],
        },
        "detectors": [candidate_payload(candidate) for candidate in detector_candidates(result, pooling)],
    }


def _probe_payload(accuracy: float, auroc: float, result: ConceptSearchResult, name: str) -> dict[str, Any]:
    probe = getattr(result.probes, name)
    cosines, nearest = getattr(result, f"{name}_cosines"), getattr(result, f"{name}_nearest")
    return {
        "accuracy": accuracy, "auroc": auroc, "bias": probe.bias, "direction": probe.direction.astype(float).tolist(),
        "cosines": {"features": cosines.features.tolist(), "decoder": cosines.decoder.astype(float).tolist(),
                    "encoder": cosines.encoder.astype(float).tolist()},
        "nearest": {"features": nearest.features.tolist(), "cosines": nearest.cosines.astype(float).tolist()},
    }


def candidate_payload(candidate: DetectorCandidate) -> dict[str, Any]:
    return {"name": candidate.name, **spec_payload(candidate.spec),
            "evaluation": evaluation_payload(candidate.evaluation)}


def spec_payload(spec: DetectorSpec) -> dict[str, Any]:
    return {"kind": spec.kind, "pooling": spec.pooling, "features": spec.features.tolist(),
            "weights": spec.weights.astype(float).tolist(), "bias": spec.bias, "threshold": spec.threshold}


def evaluation_payload(evaluation: DetectorEvaluation) -> dict[str, Any]:
    return {"nPositive": evaluation.n_positive, "nNegative": evaluation.n_negative, "accuracy": evaluation.accuracy,
            "precision": evaluation.precision, "recall": evaluation.recall, "auroc": evaluation.auroc,
            "rocFpr": evaluation.roc_fpr.astype(float).tolist(), "rocTpr": evaluation.roc_tpr.astype(float).tolist()}


def detect_answer(request: dict[str, Any]) -> dict[str, Any]:
    """A detector applied to texts while the request waits: each text's score, decision and token contributions,
    and with labels, the evaluation; or {"error": message}."""
    sae = Sae.objects.select_related("language_model").filter(pk=request["sae_id"]).first()
    if sae is None:
        return {"error": "The detector's SAE no longer exists."}
    spec = DetectorSpec(kind=request["kind"], pooling=request["pooling"],
                        features=np.array(request["features"], dtype=np.int64),
                        weights=np.array(request["weights"], dtype=np.float32), bias=float(request["bias"]),
                        threshold=float(request["threshold"]))
    device = worker_device()
    model = language_model_loaded(sae.language_model, device)
    try:
        detections = detect(model, sae_loaded(sae, device), sae.hook_name, request["texts"], spec)
    except (DetectorError, LiveTextError) as error:
        return {"error": str(error)}
    answer: dict[str, Any] = {"results": [_detection_payload(found) for found in detections]}
    if request.get("labels") is not None:
        labels = np.array(request["labels"], dtype=bool)
        scores = np.array([found.score for found in detections], dtype=np.float32)
        answer["evaluation"] = evaluation_payload(detector_evaluation(scores, labels, spec.threshold))
    return answer


def _detection_payload(found: TextDetection) -> dict[str, Any]:
    return {"score": found.score, "detected": found.detected, "tokenIds": found.token_ids.tolist(),
            "contributions": found.contributions.astype(float).tolist(),
            "strongestToken": found.strongest_token.tolist()}
