"""Neuronpedia's own Python client, pointed at a live Atlas server, reads the numbers the feature page shows."""

import html
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from neuronpedia.requests.base_request import NPRequest
from neuronpedia.requests.sae_feature_request import SAEFeatureRequest
from neuronpedia.requests.vector_request import VectorRequest
from pytest_django.live_server_helper import LiveServer

from atlas.accounts.services import api_key_create
from atlas.features.models import Feature
from atlas.lms.models import LanguageModel
from tests import factories

FEATURE = ("tiny-llama", "0-res-8", "3")
# Reads are public; the client refuses to send a request without some key.
READ_ONLY_KEY = "reads-need-no-key"


@pytest.fixture
def client_on_live_server(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[SAEFeatureRequest]:
    """The client takes its server from NPRequest.BASE_URL (neuronpedia.org/api unless USE_LOCALHOST)."""
    monkeypatch.setattr(NPRequest, "BASE_URL", f"{live_server.url}/api")
    yield SAEFeatureRequest(api_key=READ_ONLY_KEY)


@pytest.fixture
def feature_json(client_on_live_server: SAEFeatureRequest, published_feature: Feature) -> dict[str, Any]:
    feature = client_on_live_server.get(*FEATURE)
    assert (feature.modelId, feature.source, feature.index) == ("tiny-llama", "0-res-8", 3)
    body: dict[str, Any] = json.loads(feature.jsonData)
    return body


@pytest.fixture
def feature_page(live_server: LiveServer, published_feature: Feature) -> str:
    response = requests.get(f"{live_server.url}/{'/'.join(FEATURE)}", timeout=10)
    assert response.status_code == 200
    return response.text


def page_json_script(page: str, element_id: str) -> Any:
    match = re.search(rf'<script id="{element_id}" type="application/json">(.*?)</script>', page, re.S)
    assert match, element_id
    return json.loads(match.group(1))


def page_fact(page: str, title: str) -> str:
    match = re.search(rf"<dt>{title}</dt><dd>(.*?)</dd>", page)
    assert match, title
    return html.unescape(match.group(1))


def page_logits(page: str, column: str) -> list[tuple[str, str]]:
    """(token, value) rows of the Positive or Negative logit table, as the page prints them."""
    table = re.search(rf"<th colspan=\"2\">{column}</th>.*?<tbody>(.*?)</tbody>", page, re.S)
    assert table, column
    rows = re.findall(r'<td class="tokentext">(.*?)</td><td class="\w+">(.*?)</td>', table.group(1))
    return [(html.unescape(token), value) for token, value in rows]


def page_examples(page: str) -> list[list[tuple[str, str]]]:
    """Each example as (token, value on hover) per token, in page order."""
    examples = re.findall(r'<div class="example">(.*?)</div>', page, re.S)
    return [[(html.unescape(token), value) for value, token in
             re.findall(r'<span class="tok[^"]*" style="[^"]*" title="([^"]*)">(.*?)</span>', example)]
            for example in examples]


def shown(value: float) -> str:
    """The page prints values to three decimals."""
    return f"{value:.3f}"


def test_client_reads_the_page_max_activation_and_density(feature_json: dict[str, Any], feature_page: str) -> None:
    assert page_fact(feature_page, "Max activation") == shown(feature_json["maxActApprox"])
    assert page_fact(feature_page, "Density") == f"{feature_json['frac_nonzero'] * 100:.3g}% of tokens"


def test_client_reads_the_page_histograms(feature_json: dict[str, Any], feature_page: str) -> None:
    assert page_json_script(feature_page, "act-hist") == {
        "x": feature_json["freq_hist_data_bar_values"], "y": feature_json["freq_hist_data_bar_heights"]}
    assert page_json_script(feature_page, "logit-hist") == {
        "x": feature_json["logits_hist_data_bar_values"], "y": feature_json["logits_hist_data_bar_heights"]}


def test_client_reads_the_page_logits(feature_json: dict[str, Any], feature_page: str) -> None:
    positive = [(token, shown(value)) for token, value in zip(feature_json["pos_str"], feature_json["pos_values"],
                                                               strict=True)]
    negative = [(token, shown(value)) for token, value in zip(feature_json["neg_str"], feature_json["neg_values"],
                                                               strict=True)]
    assert page_logits(feature_page, "Positive") == positive
    assert page_logits(feature_page, "Negative") == negative


def test_client_reads_the_page_examples(feature_json: dict[str, Any], feature_page: str) -> None:
    visible = str.maketrans({"\n": "↵", "\t": "⇥"})
    from_api = [[(token.translate(visible), shown(value)) for token, value in
                 zip(activation["tokens"], activation["values"], strict=True)]
                for activation in feature_json["activations"]]
    assert page_examples(feature_page) == from_api
    assert len(from_api) == 2


def test_client_stores_reads_lists_and_deletes_a_vector(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch,
                                                        language_model: LanguageModel) -> None:
    """VectorRequest.new / get / get_owned / delete, unmodified, against a live server; NPVector's fields agree with
    what Atlas's own API answers."""
    monkeypatch.setattr(NPRequest, "BASE_URL", f"{live_server.url}/api")
    client = VectorRequest(api_key=api_key_create(user=factories.user_make("carol")).secret)
    values = [(position % 5 - 2) / 8 for position in range(language_model.d_model)]
    made = client.new(label="joy - sorrow", model_id="tiny-llama", layer_num=1, hook_type="hook_resid_post",
                      vector=values, default_steer_strength=20)
    assert (made.model_id, made.source, made.label, made.hook_name, made.values, made.default_steer_strength) == (
        "tiny-llama", "1-vectors-resid-post", "joy - sorrow", "blocks.1.hook_resid_post", values, 20)
    assert made.url == f"{live_server.url}/tiny-llama/1-vectors-resid-post/{made.index}"
    assert requests.get(made.url, timeout=10).status_code == 200
    read = client.get("tiny-llama", made.source, made.index)
    assert read == made
    own = requests.post(f"{live_server.url}/api/vector/get", timeout=10,
                        json={"modelId": "tiny-llama", "source": made.source, "index": made.index}).json()["vector"]
    assert (own["index"], own["vector"], own["vectorLabel"]) == (read.index, read.values, read.label)
    assert client.get_owned() == [made]
    client.delete(made)
    assert client.get_owned() == []
    with pytest.raises(requests.exceptions.HTTPError, match="not found"):
        client.get("tiny-llama", made.source, made.index)
