"""atlas_import_saedashboard: SAEDashboard's batch-N.json files become an SAE's published dashboards."""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.features.models import Feature
from atlas.features.saedashboard_import import IMPORTED_DEVICE
from atlas.lms.models import LanguageModel
from atlas.lms.selectors import language_model_source, tokens_text, vocabulary_for
from atlas.saes.models import DashboardRun, Sae
from tests import factories
from workers.compute.language_model import hf_tokenizer_load as load_tokenizer

ROOT = Path(__file__).resolve().parents[2]
PEER_PYTHON = ROOT / "var" / "bench" / "saedashboard" / "venv" / "bin" / "python"
D_SAE, INDEX = 6, 2
# Windows of 2 + 1 + 1 tokens, as SAEDashboard's buffer writes them: the chosen token is always third.
TOP_IDS, INTERVAL_IDS = [40, 41, 42, 43], [50, 51, 52, 53]


@pytest.fixture
def sae(language_model: LanguageModel, dataset: Dataset) -> Sae:
    return factories.sae_make(language_model, slug="0-res-6", d_sae=D_SAE)


def _pieces(language_model: LanguageModel, ids: list[int]) -> list[str]:
    """Token ids as SAEDashboard writes them: the tokenizer's vocabulary pieces."""
    pieces: list[str] = load_tokenizer(language_model_source(language_model)).convert_ids_to_tokens(ids)
    return pieces


def _activation(tokens: list[str], values: list[float], bins: tuple[float, float, float]) -> dict[str, Any]:
    return {"bin_min": bins[0], "bin_max": bins[1], "bin_contains": bins[2], "tokens": tokens, "values": values,
            "qualifying_token_index": 9, "dfa_values": [], "dfa_maxValue": 0, "dfa_targetIndex": -1}


def _feature(index: int, language_model: LanguageModel, activations: list[dict[str, Any]]) -> dict[str, Any]:
    """One feature in the exact fields NeuronpediaDashboardFeature.to_dict writes."""
    live = any(value > 0 for activation in activations for value in activation["values"])
    return {
        "feature_index": index, "neuron_alignment_indices": [1, 2, 3], "neuron_alignment_values": [0.5, 0.4, 0.3],
        "neuron_alignment_l1": [0.1, 0.1, 0.1], "correlated_neurons_indices": [], "correlated_neurons_l1": [],
        "correlated_neurons_pearson": [], "correlated_features_indices": [], "correlated_features_l1": [],
        "correlated_features_pearson": [],
        "neg_str": _pieces(language_model, [7, 8]), "neg_values": [-2.0, -1.0],
        "pos_str": _pieces(language_model, [5, 6]), "pos_values": [2.5, 1.5],
        "frac_nonzero": 0.25 if live else 0,
        "freq_hist_data_bar_values": [0.5, 1.5, 3.5] if live else [],
        "freq_hist_data_bar_heights": [6, 3, 1] if live else [],
        "logits_hist_data_bar_heights": [1, 2, 1], "logits_hist_data_bar_values": [-2.0, 0.0, 2.0],
        "n_prompts_total": 12, "n_tokens_in_prompt": 48, "dataset": "", "decoder_weights_dist": [], "vector": [],
        "activations": activations,
    }


def _batch(language_model: LanguageModel) -> dict[str, Any]:
    """Feature 2 peaks at 4.0, with one top example and one in the second of four intervals; 0 never fires."""
    activations = [
        _activation(_pieces(language_model, TOP_IDS), [0.0, 1.0, 4.0, 0.5], (-1, 4.0, -1)),
        _activation(_pieces(language_model, INTERVAL_IDS), [0.25, 0.0, 1.5, 0.0], (1.0, 2.0, 0.125)),
    ]
    dead = [_activation(_pieces(language_model, TOP_IDS), [0.0] * 4, (-1, 0.0, -1))]
    features = [_feature(0, language_model, dead), _feature(INDEX, language_model, activations)]
    return {"model_id": "", "layer": 0, "sae_set": "test", "sae_id_suffix": None, "features": features}


def _write(path: Path, batch: dict[str, Any]) -> Path:
    path.write_text(json.dumps(batch))
    return path


def test_imported_numbers_are_what_the_api_serves(sae: Sae, dataset: Dataset, tmp_path: Path) -> None:
    batch = _write(tmp_path / "batch-0.json", _batch(sae.language_model))
    call_command("atlas_import_saedashboard", "tiny-llama", "0-res-6", str(batch), "--dataset", dataset.slug)
    body = Client().get(f"/api/feature/tiny-llama/0-res-6/{INDEX}").json()
    vocabulary = vocabulary_for(sae.language_model)
    assert (body["maxActApprox"], body["frac_nonzero"]) == (4.0, 0.25)
    assert (body["pos_str"], body["pos_values"]) == (tokens_text(vocabulary, [5, 6]), [2.5, 1.5])
    assert (body["neg_str"], body["neg_values"]) == (tokens_text(vocabulary, [7, 8]), [-2.0, -1.0])
    top, interval = body["activations"]
    assert top["tokens"] == tokens_text(vocabulary, TOP_IDS)
    assert np.allclose(top["values"], [0.0, 1.0, 4.0, 0.5], atol=4e-3)
    assert (top["binMin"], top["maxValue"]) == (-1, 4.0)
    assert interval["tokens"] == tokens_text(vocabulary, INTERVAL_IDS)
    assert np.allclose(interval["values"], [0.25, 0.0, 1.5, 0.0], atol=4e-3)
    assert (interval["binMin"], interval["binMax"], interval["binContains"]) == (1.0, 2.0, 0.125)
    # The chosen tokens: the top example's peak, and the interval example's value inside (1, 2].
    assert (top["qualifyingTokenIndex"], interval["qualifyingTokenIndex"]) == (2, 2)
    assert body["logits_hist_data_bar_values"] == [-2.0, 0.0, 2.0]
    assert body["logits_hist_data_bar_heights"] == [1, 2, 1]


def test_whole_sequences_keep_each_examples_chosen_token(sae: Sae, dataset: Dataset, tmp_path: Path) -> None:
    """Neuronpedia's runner (buffer=None) writes whole prompts, each with the position it was chosen for: the
    second was chosen for its 3.0 though it peaks later. The third's index is out of range, so it takes its
    largest value inside its interval (1, 2], the 1.5, not its 3.0."""
    whole = [
        (_activation(_pieces(sae.language_model, [40, 41, 42, 43, 44, 45]), [4.0, 0.0, 1.0, 0.0, 0.0, 0.5],
                     (-1, 4.0, -1)), 0),
        (_activation(_pieces(sae.language_model, [46, 47, 48, 49, 50, 51]), [0.0, 0.5, 1.0, 3.0, 0.0, 3.5],
                     (-1, 4.0, -1)), 3),
        (_activation(_pieces(sae.language_model, [52, 53, 54, 55, 56, 57]), [3.0, 0.0, 0.0, 0.0, 1.5, 0.0],
                     (1.0, 2.0, 0.125)), 99),
    ]
    batch = _batch(sae.language_model)
    feature = batch["features"][1]
    feature["activations"] = [activation | {"qualifying_token_index": chosen} for activation, chosen in whole]
    feature["n_tokens_in_prompt"] = 6
    call_command("atlas_import_saedashboard", "tiny-llama", "0-res-6", str(_write(tmp_path / "batch-0.json", batch)),
                 "--dataset", dataset.slug)
    body = Client().get(f"/api/feature/tiny-llama/0-res-6/{INDEX}").json()
    vocabulary = vocabulary_for(sae.language_model)
    served = [(a["tokens"], a["qualifyingTokenIndex"]) for a in body["activations"]]
    assert served == [(tokens_text(vocabulary, [40, 41, 42, 43, 44, 45]), 0),
                      (tokens_text(vocabulary, [46, 47, 48, 49, 50, 51]), 3),
                      (tokens_text(vocabulary, [52, 53, 54, 55, 56, 57]), 4)]
    page = Client().get(f"/tiny-llama/0-res-6/{INDEX}").content.decode()
    # Each example's printed value is its chosen token's.
    assert [float(v) for v in re.findall(r'<span class="value">([\d.]+)</span>', page)] == [4.0, 3.0, 1.5]


def test_activation_histogram_is_rebinned_over_zero_to_max(sae: Sae, dataset: Dataset, tmp_path: Path) -> None:
    batch = _write(tmp_path / "batch-0.json", _batch(sae.language_model))
    call_command("atlas_import_saedashboard", "tiny-llama", "0-res-6", str(batch), "--dataset", dataset.slug)
    body = Client().get(f"/api/feature/tiny-llama/0-res-6/{INDEX}").json()
    # Bars centred at 0.5, 1.5 and 3.5 fall in Atlas's bins (0, 4/3], (4/3, 8/3] and (8/3, 4].
    assert body["freq_hist_data_bar_heights"] == [6, 3, 1]
    assert sum(body["freq_hist_data_bar_heights"]) == 10


def test_the_run_is_marked_imported_and_published(sae: Sae, dataset: Dataset, tmp_path: Path) -> None:
    batch = _write(tmp_path / "batch-0.json", _batch(sae.language_model))
    call_command("atlas_import_saedashboard", "tiny-llama", "0-res-6", str(batch), "--dataset", dataset.slug)
    sae.refresh_from_db()
    run = sae.published_run
    assert run is not None
    assert (run.status, run.device, run.tokens_total) == (DashboardRun.Status.SUCCEEDED, IMPORTED_DEVICE, 12 * 48)
    params = run.dashboard_params
    assert (params.context_before, params.context_after, params.top_k) == (2, 1, 1)
    assert (params.n_intervals, params.examples_per_interval, params.logit_tokens, params.neighbours) == (4, 1, 2, 0)
    assert Feature.objects.filter(run=run).count() == D_SAE
    body = Client().get("/api/feature/tiny-llama/0-res-6/0").json()
    assert (body["frac_nonzero"], body["activations"]) == (0, [])


def test_it_takes_the_dataset_of_the_saes_latest_run(sae: Sae, dataset: Dataset, tmp_path: Path) -> None:
    factories.run_make(sae, dataset, n_sequences=12, status=DashboardRun.Status.FAILED)
    batch = _write(tmp_path / "batch-0.json", _batch(sae.language_model))
    call_command("atlas_import_saedashboard", "tiny-llama", "0-res-6", str(batch))
    sae.refresh_from_db()
    assert sae.published_run is not None and sae.published_run.dataset == dataset


@pytest.mark.parametrize(
    ("spoil", "words"),
    [
        (lambda batch: batch["features"][1]["activations"][1].update(values="high"),
         "batch-0.json.features[1].activations[1].values: expected a list"),
        (lambda batch: batch["features"][1].pop("frac_nonzero"),
         "batch-0.json.features[1]: missing field 'frac_nonzero'"),
        (lambda batch: batch["features"][1].update(feature_index=D_SAE), "feature_index: 6 is outside the SAE's 0..5"),
        (lambda batch: batch["features"][1]["pos_str"].__setitem__(0, "no-such-token\u2603"),
         "batch-0.json.features[1].pos_str[0]: token 'no-such-token\u2603' is not in the model's vocabulary"),
    ],
)
def test_bad_input_names_file_and_field_and_leaves_no_rows(sae: Sae, dataset: Dataset, tmp_path: Path,
                                                            spoil: Any, words: str) -> None:
    good = _write(tmp_path / "batch-0.json", _batch(sae.language_model))
    call_command("atlas_import_saedashboard", "tiny-llama", "0-res-6", str(good), "--dataset", dataset.slug)
    runs, features = DashboardRun.objects.count(), Feature.objects.count()
    batch = _batch(sae.language_model)
    spoil(batch)
    bad = _write(tmp_path / "batch-0.json", batch)
    with pytest.raises(CommandError) as raised:
        call_command("atlas_import_saedashboard", "tiny-llama", "0-res-6", str(bad), "--dataset", dataset.slug)
    assert words in str(raised.value)
    assert (DashboardRun.objects.count(), Feature.objects.count()) == (runs, features)


def test_a_feature_in_two_files_is_refused(sae: Sae, dataset: Dataset, tmp_path: Path) -> None:
    first = _write(tmp_path / "batch-0.json", _batch(sae.language_model))
    second = _write(tmp_path / "batch-1.json", _batch(sae.language_model))
    with pytest.raises(CommandError, match=r"batch-1\.json: feature 0 appears twice"):
        call_command("atlas_import_saedashboard", "tiny-llama", "0-res-6", str(first), str(second),
                     "--dataset", dataset.slug)
    assert not DashboardRun.objects.exists()


@pytest.mark.slow
@pytest.mark.skipif(not PEER_PYTHON.exists(), reason="SAEDashboard's venv is made by `make bench-vs-saedashboard`")
@pytest.mark.parametrize("whole_sequences", [False, True], ids=["windows", "whole-sequences"])
def test_real_saedashboard_output_imports(language_model: LanguageModel, dataset: Dataset, tmp_path: Path,
                                          whole_sequences: bool) -> None:
    sae_dir = factories.sae_lens_write(tmp_path / "sae", d_in=language_model.d_model, d_sae=16)
    tokens = tmp_path / "tokens.npy"
    np.save(tokens, np.load(dataset.tokens_path)[:12])
    out = tmp_path / "saedashboard"
    command = [str(PEER_PYTHON), "-m", "tests.support.saedashboard_batch_write", "--model-dir",
               str(factories.tiny_model_dir()), "--sae-dir", str(sae_dir), "--tokens", str(tokens),
               "--output-dir", str(out), *(["--whole-sequences"] if whole_sequences else [])]
    env = {"PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    factories.sae_make(language_model, slug="0-res-16", d_sae=16)
    call_command("atlas_import_saedashboard", "tiny-llama", "0-res-16", str(out / "batch-0.json"),
                 "--dataset", dataset.slug)

    tokenizer = load_tokenizer(language_model_source(language_model))
    vocabulary = vocabulary_for(language_model)
    live = [f for f in json.loads((out / "batch-0.json").read_text())["features"] if f["frac_nonzero"] > 0]
    assert live, "the test SAE should fire on the docstrings"
    for feature in live:
        body = Client().get(f"/api/feature/tiny-llama/0-res-16/{feature['feature_index']}").json()
        assert body["frac_nonzero"] == feature["frac_nonzero"]
        assert body["pos_values"] == pytest.approx(feature["pos_values"], abs=1e-6)
        assert body["pos_str"] == tokens_text(vocabulary, tokenizer.convert_tokens_to_ids(feature["pos_str"]))
        top_file = [a for a in feature["activations"] if a["bin_min"] == -1]
        top_api = [a for a in body["activations"] if a["binMin"] == -1]
        assert body["maxActApprox"] == pytest.approx(top_file[0]["bin_max"], rel=1e-6)
        assert len(top_api) == len(top_file)
        for served, written in zip(top_api, top_file, strict=True):
            assert served["tokens"] == tokens_text(vocabulary, tokenizer.convert_tokens_to_ids(written["tokens"]))
            assert served["values"] == pytest.approx(written["values"], abs=body["maxActApprox"] * 1e-3)
            if whole_sequences:  # then SAEDashboard's qualifying token counts from the example's first token
                assert served["qualifyingTokenIndex"] == written["qualifying_token_index"]
