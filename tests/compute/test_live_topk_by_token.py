"""Each token's top features on typed text, against a direct forward and encode of every feature."""

from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer

from tests import factories
from workers.compute import dashboard
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.live import LiveTextError, text_tokens, top_features_by_token
from workers.compute.sae import SparseAutoencoder, sae_load

TEXT = "Return the number of items in a container.<|eos|> Split the string at the first separator."
D_SAE = 48


@pytest.fixture(scope="module")
def model() -> HookedTransformer:
    return load_language_model(ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir())))


@pytest.fixture(scope="module")
def sae(model: HookedTransformer, tmp_path_factory: pytest.TempPathFactory) -> SparseAutoencoder:
    directory: Path = tmp_path_factory.mktemp("sae")
    return sae_load(factories.sae_lens_write_busy(directory, d_in=model.cfg.d_model, d_sae=D_SAE))


def _direct(model: HookedTransformer, sae: SparseAutoencoder) -> torch.Tensor:
    """[T, F]: every feature's activation on every token of TEXT by a plain forward."""
    with torch.inference_mode():
        _, cache = model.run_with_cache(text_tokens(model, TEXT), names_filter=factories.TINY_HOOK)
        return sae.encode(cache[factories.TINY_HOOK][0])


# k = 30 is more features than fire on any token: the rest are zeros, the lower index first as for any tie.
@pytest.mark.parametrize("k", [5, 30])
@pytest.mark.parametrize("slice_features", [None, 7])
def test_each_token_keeps_its_k_strongest_features(model: HookedTransformer, sae: SparseAutoencoder,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    slice_features: int | None, k: int) -> None:
    acts = _direct(model, sae)
    if slice_features:  # encode 7 features at a time: each token's running top-k must merge slices exactly
        monkeypatch.setattr(dashboard, "ENCODE_CHUNK_ELEMENTS", acts.shape[0] * slice_features)
    expected = acts.sort(dim=1, descending=True, stable=True)
    found = top_features_by_token(model, sae, factories.TINY_HOOK, TEXT, k)
    assert found.token_ids.tolist() == text_tokens(model, TEXT)[0].tolist()
    assert found.features.tolist() == expected.indices[:, :k].tolist()
    np.testing.assert_allclose(found.values, expected.values[:, :k].numpy(), rtol=1e-5, atol=1e-6)
    assert (found.values[:, 0] > 0).all() and ((found.values == 0).any() == (k == 30))


def test_special_tokens_are_marked(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    found = top_features_by_token(model, sae, factories.TINY_HOOK, TEXT, 1)
    ids = found.token_ids.tolist()
    special = [position for position, token_id in enumerate(ids) if token_id in model.tokenizer.all_special_ids]
    assert special == [0, ids.index(model.tokenizer.eos_token_id)] and special[1] > 0
    assert np.flatnonzero(found.special).tolist() == special


def test_k_beyond_the_sae_is_every_feature(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    found = top_features_by_token(model, sae, factories.TINY_HOOK, TEXT, D_SAE + 10)
    assert found.features.shape == (len(found.token_ids), D_SAE)
    assert all(sorted(row) == list(range(D_SAE)) for row in found.features.tolist())


def test_text_without_tokens_is_refused(model: HookedTransformer, sae: SparseAutoencoder) -> None:
    with pytest.raises(LiveTextError, match="no tokens"):
        top_features_by_token(model, sae, factories.TINY_HOOK, "", 5)
