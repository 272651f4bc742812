"""Typed text through the tiny model and SAE: the live functions against a direct forward and encode."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer

from tests import factories
from workers.compute import dashboard
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.live import LiveTextError, feature_activations_on_text, text_tokens, top_features_on_text
from workers.compute.sae import SparseAutoencoder, sae_load

TEXT = "Return the number of items in a container.\tSplit the string at the first separator."
D_SAE = 48


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return load_language_model(ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir())))


@pytest.fixture(scope="module")
def sae(model: HookedTransformer, tmp_path_factory: pytest.TempPathFactory) -> SparseAutoencoder:
    directory: Path = tmp_path_factory.mktemp("sae")
    return sae_load(factories.sae_lens_write(directory, d_in=model.cfg.d_model, d_sae=D_SAE))


def _direct(model: HookedTransformer, sae: SparseAutoencoder, text: str) -> tuple[list[int], torch.Tensor]:
    """BOS + the text's tokens as the datasets tokenize, and every feature's activation [T, F] by a plain forward."""
    ids = [model.tokenizer.bos_token_id, *model.tokenizer(text, add_special_tokens=False)["input_ids"]]
    with torch.inference_mode():
        _, cache = model.run_with_cache(torch.tensor([ids]), names_filter=factories.TINY_HOOK)
        return ids, sae.encode(cache[factories.TINY_HOOK][0])


def test_tokens_start_with_bos_then_the_text_as_datasets_tokenize_it(model: HookedTransformer) -> None:
    ids = text_tokens(model, TEXT)[0].tolist()
    assert ids[0] == model.tokenizer.bos_token_id
    assert ids[1:] == model.tokenizer(TEXT, add_special_tokens=False)["input_ids"]


def test_one_features_activations_equal_a_direct_encode(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    ids, acts = _direct(model, sae, TEXT)
    busiest = int((acts[1:] > 0).sum(dim=0).argmax())
    found = feature_activations_on_text(model, sae, factories.TINY_HOOK, TEXT, busiest)
    assert found.token_ids.tolist() == ids
    assert found.features.tolist() == [busiest]
    np.testing.assert_allclose(found.values[0], acts[:, busiest].numpy(), rtol=1e-5, atol=1e-6)
    assert found.values[0, 1:].max() > 0


@pytest.mark.parametrize("slice_features", [None, 7])
def test_top_features_are_ranked_by_their_strongest_token_but_bos(
    model: HookedTransformer, sae: SparseAutoencoder, monkeypatch: pytest.MonkeyPatch, slice_features: int | None
) -> None:
    ids, acts = _direct(model, sae, TEXT)
    if slice_features:  # encode 7 features at a time: the running top-n must merge slices exactly
        monkeypatch.setattr(dashboard, "ENCODE_CHUNK_ELEMENTS", len(ids) * slice_features)
    strongest = acts[1:].amax(dim=0)
    expected = [int(feature) for feature in strongest.sort(descending=True, stable=True).indices[:10]
                if strongest[feature] > 0]
    found = top_features_on_text(model, sae, factories.TINY_HOOK, TEXT, 10)
    assert found.features.tolist() == expected
    np.testing.assert_allclose(found.values, acts[:, expected].T.numpy(), rtol=1e-5, atol=1e-6)


def test_features_that_never_fire_on_the_text_are_left_out(model: HookedTransformer,
                                                            sae: SparseAutoencoder) -> None:
    _, acts = _direct(model, sae, TEXT)
    n_firing = int((acts[1:].amax(dim=0) > 0).sum())
    assert 0 < n_firing < D_SAE
    assert len(top_features_on_text(model, sae, factories.TINY_HOOK, TEXT, D_SAE).features) == n_firing


def test_long_text_is_cut_to_the_models_context(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    found = feature_activations_on_text(model, sae, factories.TINY_HOOK, TEXT * 200, 0)
    assert found.token_ids.shape == (model.cfg.n_ctx,) == found.values[0].shape


def test_text_without_tokens_is_refused(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    with pytest.raises(LiveTextError, match="no tokens"):
        top_features_on_text(model, sae, factories.TINY_HOOK, "", 5)


def test_a_feature_the_sae_lacks_is_refused(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    with pytest.raises(LiveTextError, match=f"features 0 to {D_SAE - 1}"):
        feature_activations_on_text(model, sae, factories.TINY_HOOK, TEXT, D_SAE)
