"""Typed text through an SAE's model and the SAE, for a web request that waits for the answer (the live task)."""

from collections.abc import Callable
from typing import Any

from transformer_lens import HookedTransformer

from atlas.saes.models import Sae
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


def text_activations_compute(*, sae_id: int, text: str, feature: int | None, n_results: int) -> dict[str, Any]:
    """With a feature: that feature's activation on each token; without: the n_results features that fire most
    strongly on the text. Plain lists for the result backend, or {"error": message} for text or a feature that
    cannot be run, which the web turns into a 400.
    """

    def compute(model: HookedTransformer, loaded: SparseAutoencoder, hook_name: str) -> dict[str, Any]:
        if feature is None:
            return _text_activations_payload(top_features_on_text(model, loaded, hook_name, text, n_results))
        return _text_activations_payload(feature_activations_on_text(model, loaded, hook_name, text, feature))

    return _live_run(sae_id, compute)


def _text_activations_payload(found: TextActivations) -> dict[str, Any]:
    return {
        "tokenIds": found.token_ids.tolist(),
        "features": found.features.tolist(),
        "values": found.values.astype(float).tolist(),
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
