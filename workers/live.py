"""Typed text through an SAE's model and the SAE, for a web request that waits for the answer (the live task)."""

from collections.abc import Callable
from typing import Any

import numpy as np
from transformer_lens import HookedTransformer

from atlas.saes.models import Sae
from workers.anomaly import AnomalyReference, anomaly_reference
from workers.compute.anomaly import FloatArray, TokenAnomaly, feature_activations_with_anomaly, percentiles
from workers.compute.live import (
    LiveTextError,
    TextActivations,
    TokenTopFeatures,
    feature_activations_on_text,
    top_features_by_token,
    top_features_on_text,
)
from workers.compute.sae import SparseAutoencoder
from workers.loaded import language_model_loaded, sae_loaded, worker_device

# A live computation on the SAE's model, the SAE and its hook name, answering plain lists for the result backend.
LiveCompute = Callable[[HookedTransformer, SparseAutoencoder, str], dict[str, Any]]


def _live_run(sae_id: int, compute: LiveCompute) -> dict[str, Any]:
    """compute on the SAE's model and the SAE, loaded on this worker's device; {"error": message} when the SAE is
    gone or the text cannot be run, which the web turns into a 400."""
    sae = Sae.objects.select_related("language_model").filter(pk=sae_id).first()
    if sae is None:
        return {"error": f"SAE {sae_id} no longer exists."}
    device = worker_device()
    model = language_model_loaded(sae.language_model, device)
    try:
        return compute(model, sae_loaded(sae, device), sae.hook_name)
    except LiveTextError as error:
        return {"error": str(error)}


def text_activations_compute(*, sae_id: int, text: str, feature: int | None, n_results: int,
                             anomaly: bool = False) -> dict[str, Any]:
    """With a feature: that feature's activation on each token, and with anomaly each token's anomaly scores from
    the same forward; without: the n_results features that fire most strongly on the text. Plain lists for the
    result backend, or {"error": message} for text or a feature that cannot be run, which the web turns into a 400.
    """

    def compute(model: HookedTransformer, loaded: SparseAutoencoder, hook_name: str) -> dict[str, Any]:
        if feature is None:
            return _text_activations_payload(top_features_on_text(model, loaded, hook_name, text, n_results))
        if anomaly:
            reference = anomaly_reference(Sae.objects.get(pk=sae_id))
            surprisal = np.zeros(loaded.d_sae) if reference.surprisal is None else reference.surprisal
            found, scores = feature_activations_with_anomaly(model, loaded, hook_name, text, feature, surprisal)
            return {**_text_activations_payload(found), "anomaly": _anomaly_payload(scores, reference)}
        return _text_activations_payload(feature_activations_on_text(model, loaded, hook_name, text, feature))

    return _live_run(sae_id, compute)


def _text_activations_payload(found: TextActivations) -> dict[str, Any]:
    return {
        "tokenIds": found.token_ids.tolist(),
        "features": found.features.tolist(),
        "values": found.values.astype(float).tolist(),
    }


def _bos_left_out(values: FloatArray | None) -> list[float | None] | None:
    """Per-token values with BOS's None: it counts nowhere, as in the dashboards."""
    return None if values is None else [None, *values[1:].tolist()]


def _anomaly_payload(scores: TokenAnomaly, reference: AnomalyReference) -> dict[str, Any]:
    rarity = None if reference.surprisal is None else scores.rarity
    table = reference.distribution
    return {
        "reconstructionError": _bos_left_out(scores.reconstruction_error),
        "rarity": _bos_left_out(rarity),
        "reconstructionErrorPercentile": _bos_left_out(
            None if table is None else percentiles(scores.reconstruction_error, table.reconstruction_error)),
        "rarityPercentile": _bos_left_out(
            None if table is None or rarity is None else percentiles(rarity, table.rarity)),
        "datasetTokens": None if table is None else table.n_tokens,
        "message": reference.missing,
    }


def top_features_by_token_compute(*, sae_id: int, text: str, n_results: int) -> dict[str, Any]:
    """Each token's n_results strongest features on the text, as plain lists for the result backend, or
    {"error": message} for text that cannot be run."""

    def compute(model: HookedTransformer, loaded: SparseAutoencoder, hook_name: str) -> dict[str, Any]:
        return _top_features_by_token_payload(top_features_by_token(model, loaded, hook_name, text, n_results))

    return _live_run(sae_id, compute)


def _top_features_by_token_payload(found: TokenTopFeatures) -> dict[str, Any]:
    return {
        "tokenIds": found.token_ids.tolist(),
        "special": found.special.tolist(),
        "features": found.features.tolist(),
        "values": found.values.astype(float).tolist(),
    }
