"""POST /api/search-topk-by-token through a real worker process: each token's features are its strongest, with the
values POST /api/activation/new gives for them; ignoreBos and densityThreshold filter as Neuronpedia's do."""

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client

from atlas.explanations.services import explanation_create
from atlas.saes.models import Sae
from tests import factories
from tests.support.workers import Workers
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.live import feature_activations_on_text
from workers.compute.sae import sae_load

TEXT = "Return a new list containing all items from the iterable in ascending order."
D_SAE = 48
# Even features are dense (active on half the tokens they were run on), odd ones sparse.
DENSITIES = {index: 0.5 if index % 2 == 0 else 0.001 for index in range(D_SAE)}


@pytest.fixture
def sae(workers: Workers, media_root: Path, settings: Any) -> Sae:
    """A published SAE with files, densities from DENSITIES, and a worker; the rate limit out of the way of the
    many activation/new requests."""
    settings.ATLAS_LIVE_RATE = "10000/minute"
    sae = factories.live_sae_published(media_root, factories.language_model_make(), DENSITIES, d_sae=D_SAE)
    workers.start()
    return sae


def _direct(sae: Sae) -> np.ndarray:
    """[T, d_sae]: every feature's activation on every token of TEXT, BOS first, computed here."""
    model = load_language_model(ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir())))
    loaded = sae_load(sae.files_path)
    return np.stack([feature_activations_on_text(model, loaded, sae.hook_name, TEXT, index).values[0]
                     for index in range(D_SAE)], axis=1)


def _post(path: str, body: dict[str, Any]) -> Any:
    response = Client().post(path, json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def _topk(sae: Sae, **options: Any) -> Any:
    return _post("/api/search-topk-by-token", {"modelId": "tiny-llama", "source": sae.slug, "text": TEXT,
                                               "numResults": 5, **options})


def _features(answer: Any) -> list[list[int]]:
    return [[top["featureIndex"] for top in result["topFeatures"]] for result in answer["results"]]


def test_each_token_has_its_strongest_features_with_activation_new_s_values(sae: Sae) -> None:
    answer = _topk(sae, ignoreBos=False, densityThreshold=0)
    direct = _direct(sae)
    assert answer["source"] == sae.slug
    assert [result["position"] for result in answer["results"]] == list(range(direct.shape[0]))
    assert answer["results"][0]["isSpecial"] and not any(result["isSpecial"] for result in answer["results"][1:])
    for result, acts in zip(answer["results"], direct, strict=True):
        fired = [index for index in np.argsort(-acts, kind="stable")[:5] if acts[index] > 0]
        assert [top["featureIndex"] for top in result["topFeatures"]] == fired
        np.testing.assert_allclose([top["activationValue"] for top in result["topFeatures"]], acts[fired],
                                   rtol=1e-5, atol=1e-6)
    assert sum(map(len, _features(answer))) > D_SAE // 2, "too few features fire to prove anything"
    for index in sorted({index for features in _features(answer) for index in features}):
        values = _post("/api/activation/new", {"feature": {"modelId": "tiny-llama", "source": sae.slug,
                                                           "index": index}, "customText": TEXT})["values"]
        for result in answer["results"]:
            for top in result["topFeatures"]:
                if top["featureIndex"] == index:
                    assert top["activationValue"] == pytest.approx(values[result["position"]], rel=1e-5, abs=1e-6)


def test_each_feature_comes_with_its_published_numbers_and_newest_label(sae: Sae) -> None:
    author = factories.user_make()
    for index in range(D_SAE):
        explanation_create(sae=sae, index=index, description=f"older label of {index}", author=author)
        explanation_create(sae=sae, index=index, description=f"label of {index}", author=author)
    answer = _topk(sae, densityThreshold=0)
    tops = [top for result in answer["results"] for top in result["topFeatures"]]
    assert tops
    for top in tops:
        feature, index = top["feature"], top["featureIndex"]
        assert (feature["modelId"], feature["layer"], feature["index"]) == ("tiny-llama", sae.slug, index)
        assert (feature["frac_nonzero"], feature["maxActApprox"]) == (DENSITIES[index], 1.0)
        assert [label["description"] for label in feature["explanations"]] == [f"label of {index}"]


def test_ignore_bos_drops_position_0_only_here(sae: Sae) -> None:
    kept, dropped = _topk(sae, ignoreBos=False, densityThreshold=0), _topk(sae, ignoreBos=True, densityThreshold=0)
    assert dropped["results"] == kept["results"][1:]
    assert kept["results"][0]["position"] == 0 and dropped["results"][0]["position"] == 1


def test_a_density_threshold_drops_the_dense_features(sae: Sae) -> None:
    everything, sparse = _topk(sae, densityThreshold=0), _topk(sae, densityThreshold=0.01)
    expected = [[index for index in features if index % 2 == 1] for features in _features(everything)]
    assert _features(sparse) == expected
    assert any(index % 2 == 0 for features in _features(everything) for index in features), "no dense feature fired"
    # Neuronpedia's default, 0.01, applies when the field is left out.
    assert _features(_topk(sae)) == expected
