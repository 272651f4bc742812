"""Neuronpedia's own client, unmodified, asks a live Atlas server (and its worker) for each token's top features: its
TopKByTokenRequest reads the same numbers POST /api/search-topk-by-token gives."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from neuronpedia.requests.base_request import NPRequest
from neuronpedia.requests.topk_by_token_request import TopKByTokenRequest
from pytest_django.live_server_helper import LiveServer

from atlas.saes.models import Sae
from tests import factories
from tests.support.workers import Workers

TEXT = "Return a new list containing all items from the iterable in ascending order."
# Even features dense, odd ones sparse.
DENSITIES = {index: 0.5 if index % 2 == 0 else 0.001 for index in range(48)}
# The client refuses to send a request without some key; this endpoint needs none.
ANY_KEY = "no-key-needed"


@pytest.fixture
def sae(workers: Workers, media_root: Path) -> Sae:
    sae = factories.live_sae_published(media_root, factories.language_model_make(), DENSITIES)
    workers.start()
    return sae


@pytest.fixture
def client(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TopKByTokenRequest]:
    """The client takes its server from NPRequest.BASE_URL (neuronpedia.org/api unless USE_LOCALHOST)."""
    monkeypatch.setattr(NPRequest, "BASE_URL", f"{live_server.url}/api")
    yield TopKByTokenRequest(api_key=ANY_KEY)


def _api(live_server: LiveServer, body: dict[str, Any]) -> Any:
    response = requests.post(f"{live_server.url}/api/search-topk-by-token", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def _rows(answer: Any) -> list[tuple[int, str, list[tuple[int, float]]]]:
    return [(result["position"], result["token"],
             [(top["featureIndex"], top["activationValue"]) for top in result["topFeatures"]])
            for result in answer["results"]]


@pytest.mark.parametrize(("density_threshold", "ignore_bos"), [(0.0, True), (0.01, False)])
def test_the_client_reads_each_token_s_top_features_as_the_api_gives_them(
    client: TopKByTokenRequest, live_server: LiveServer, sae: Sae, density_threshold: float, ignore_bos: bool
) -> None:
    found = client.compute_top_features_by_token_for_text("tiny-llama", sae.slug, TEXT, num_results=3,
                                                          ignore_bos=ignore_bos,
                                                          density_threshold=density_threshold)
    answer = _api(live_server, {"modelId": "tiny-llama", "source": sae.slug, "text": TEXT, "numResults": 3,
                                "ignoreBos": ignore_bos, "densityThreshold": density_threshold})
    from_client = [(result.position, result.token,
                    [(top.feature.index, top.activationValue) for top in result.topFeatures]) for result in found]
    assert from_client == _rows(answer)
    assert all((top.feature.model, top.feature.source) == ("tiny-llama", sae.slug)
               for result in found for top in result.topFeatures)
    assert found[0].position == (1 if ignore_bos else 0)
    assert any(result.topFeatures for result in found)
    if density_threshold:
        assert all(top.feature.index % 2 == 1 for result in found for top in result.topFeatures)
