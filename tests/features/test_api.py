"""GET /api/feature/<model>/<sae>/<index>: Neuronpedia's field names, JSON 404s."""

import pytest
from django.test import Client

from atlas.features.models import Feature
from atlas.lms.models import LanguageModel
from atlas.lms.selectors import tokens_text, vocabulary_for

NEURONPEDIA_FIELDS = {
    "modelId", "layer", "index", "maxActApprox", "frac_nonzero", "pos_str", "pos_values", "neg_str", "neg_values",
    "freq_hist_data_bar_heights", "freq_hist_data_bar_values", "logits_hist_data_bar_heights",
    "logits_hist_data_bar_values", "activations",
}
ACTIVATION_FIELDS = {
    "tokens", "values", "maxValue", "maxValueTokenIndex", "minValue", "binMin", "binMax", "binContains",
}


@pytest.mark.parametrize("suffix", ["", "/"])
def test_feature_has_neuronpedia_fields(published_feature: Feature, suffix: str) -> None:
    response = Client().get(f"/api/feature/tiny-llama/0-res-8/3{suffix}")
    body = response.json()
    assert response.status_code == 200
    assert body.keys() >= NEURONPEDIA_FIELDS
    assert (body["modelId"], body["layer"], body["index"]) == ("tiny-llama", "0-res-8", 3)
    assert (body["maxActApprox"], body["frac_nonzero"]) == (4.0, 0.25)
    assert all(activation.keys() >= ACTIVATION_FIELDS for activation in body["activations"])


def test_token_text_comes_from_the_vocabulary(published_feature: Feature, language_model: LanguageModel) -> None:
    body = Client().get("/api/feature/tiny-llama/0-res-8/3").json()
    vocabulary = vocabulary_for(language_model)
    assert body["pos_str"] == tokens_text(vocabulary, [5, 6])
    assert body["neg_values"] == [-2.0, -1.0]
    assert body["activations"][0]["tokens"] == tokens_text(vocabulary, [10, 11, 12])


def test_top_examples_carry_bin_minus_one_and_intervals_their_bounds(published_feature: Feature) -> None:
    top, interval = Client().get("/api/feature/tiny-llama/0-res-8/3").json()["activations"]
    assert (top["binMin"], top["maxValue"], top["maxValueTokenIndex"], top["minValue"]) == (-1, 4.0, 1, 0.0)
    assert (interval["binMin"], interval["binMax"], interval["binContains"]) == (0.0, 2.0, 0.75)


def test_neighbours_are_listed_by_decoder_cosine(published_feature: Feature) -> None:
    body = Client().get("/api/feature/tiny-llama/0-res-8/3").json()
    assert (body["topkCosSimIndices"], body["topkCosSimValues"]) == ([6, 1], [0.75, 0.5])


def test_histograms_are_bin_centres_and_counts(published_feature: Feature) -> None:
    body = Client().get("/api/feature/tiny-llama/0-res-8/3").json()
    assert body["freq_hist_data_bar_values"] == [1.0, 3.0]
    assert body["freq_hist_data_bar_heights"] == [3, 1]
    assert body["logits_hist_data_bar_values"] == [-2.0, 0.0, 2.0]


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/api/feature/nope/0-res-8/3", "No model 'nope'"),
        ("/api/feature/tiny-llama/9-res-1/3", "has no SAE '9-res-1'"),
        ("/api/feature/tiny-llama/0-res-8/99", "there is no feature 99"),
        ("/api/nothing-here", "No API endpoint"),
    ],
)
def test_unknown_ids_are_json_404s(published_feature: Feature, path: str, words: str) -> None:
    response = Client().get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "not_found"
    assert words in response.json()["message"]
