"""atlas_export: an SAE's dashboards in Neuronpedia's import layout, with the numbers the API serves."""

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from atlas.explanations.services import explanation_create
from atlas.features.export import NEURONPEDIA_DEFAULT_CREATOR_ID, sae_export_neuronpedia
from atlas.features.models import Feature
from atlas.saes.models import Sae
from tests.factories import PUBLISHED_FEATURES, PUBLISHED_INDEX


def _jsonl(path: Path) -> list[dict[str, Any]]:
    raw = path.read_bytes()
    text = gzip.decompress(raw) if path.suffix == ".gz" else raw
    return [json.loads(line) for line in text.decode("utf-8").splitlines()]


def test_it_writes_neuronpedias_import_layout(published_feature: Feature, tmp_path: Path) -> None:
    call_command("atlas_export", "tiny-llama", "0-res-8", str(tmp_path))
    source = tmp_path / "tiny-llama" / "0-res-8"
    names = {str(path.relative_to(source)) for path in source.rglob("*") if path.is_file()}
    assert names == {"model.jsonl", "sourceset.jsonl", "source.jsonl", "features/batch-0.jsonl.gz",
                     "activations/batch-0.jsonl.gz", "explanations/batch-0.jsonl.gz"}
    (row,) = _jsonl(source / "source.jsonl")
    assert (row["id"], row["modelId"], row["setName"]) == ("0-res-8", "tiny-llama", "res-8")
    (source_set,) = _jsonl(source / "sourceset.jsonl")
    assert source_set["name"] == "res-8"


def test_exported_numbers_equal_the_api(published_feature: Feature, tmp_path: Path) -> None:
    source = sae_export_neuronpedia(sae=published_feature.run.sae, directory=tmp_path)
    api = Client().get(f"/api/feature/tiny-llama/0-res-8/{PUBLISHED_INDEX}").json()
    features = _jsonl(source / "features" / "batch-0.jsonl.gz")
    assert [row["index"] for row in features] == [str(index) for index in range(PUBLISHED_FEATURES)]
    feature = features[PUBLISHED_INDEX]
    for name in ("maxActApprox", "frac_nonzero", "pos_str", "pos_values", "neg_str", "neg_values",
                 "freq_hist_data_bar_heights", "freq_hist_data_bar_values", "logits_hist_data_bar_heights",
                 "logits_hist_data_bar_values"):
        assert feature[name] == api[name], name
    assert (feature["modelId"], feature["layer"]) == ("tiny-llama", "0-res-8")
    activations = [row for row in _jsonl(source / "activations" / "batch-0.jsonl.gz")
                   if row["index"] == str(PUBLISHED_INDEX)]
    for name in ("tokens", "values", "maxValue", "maxValueTokenIndex", "minValue", "binMin", "binMax", "binContains"):
        assert [row[name] for row in activations] == [activation[name] for activation in api["activations"]], name
    assert len({row["id"] for row in activations}) == len(activations)


def test_features_are_batched_with_their_activations(published_feature: Feature, tmp_path: Path) -> None:
    source = sae_export_neuronpedia(sae=published_feature.run.sae, directory=tmp_path, batch_features=3)
    batches = [_jsonl(source / "features" / f"batch-{batch}.jsonl.gz") for batch in range(3)]
    assert [[row["index"] for row in rows] for rows in batches] == [["0", "1", "2"], ["3", "4", "5"], ["6", "7"]]
    assert {row["index"] for row in _jsonl(source / "activations" / "batch-1.jsonl.gz")} == {str(PUBLISHED_INDEX)}
    assert _jsonl(source / "activations" / "batch-0.jsonl.gz") == []


def test_labels_are_exported_as_explanation_rows(published_feature: Feature, tmp_path: Path) -> None:
    sae = published_feature.run.sae
    author = User.objects.create_user("ada")
    explanation_create(sae=sae, index=PUBLISHED_INDEX, description="the word cat", author=author)
    explanation_create(sae=sae, index=6, description="plural nouns", author=author)
    source = sae_export_neuronpedia(sae=sae, directory=tmp_path, batch_features=3)
    assert _jsonl(source / "explanations" / "batch-0.jsonl.gz") == []
    first, second = (_jsonl(source / "explanations" / f"batch-{batch}.jsonl.gz") for batch in (1, 2))
    assert [(row["index"], row["description"]) for row in first + second] == [(str(PUBLISHED_INDEX), "the word cat"),
                                                                              ("6", "plural nouns")]
    row = first[0]
    assert (row["modelId"], row["layer"], row["authorId"]) == ("tiny-llama", "0-res-8", NEURONPEDIA_DEFAULT_CREATOR_ID)
    assert "ada" in row["notes"]
    api_explanation = Client().get(f"/api/feature/tiny-llama/0-res-8/{PUBLISHED_INDEX}").json()["explanations"][0]
    assert row["createdAt"] == api_explanation["createdAt"]


def test_an_sae_without_dashboards_is_refused(published_feature: Feature, tmp_path: Path) -> None:
    Sae.objects.filter(pk=published_feature.run.sae_id).update(published_run=None)
    with pytest.raises(CommandError, match="no published dashboards"):
        call_command("atlas_export", "tiny-llama", "0-res-8", str(tmp_path))
