"""Live activations through a real worker process: the API's answer equals a direct run of the same text."""

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.test import Client

from atlas.lms.models import LanguageModel
from atlas.lms.selectors import tokens_text, vocabulary_for
from atlas.saes.models import DashboardRun, Sae
from tests import factories
from tests.support.workers import Workers
from workers.compute.language_model import ModelSource, load_language_model
from workers.compute.live import TextActivations, feature_activations_on_text, top_features_on_text
from workers.compute.sae import sae_load

TEXT = "Return a new list containing all items from the iterable in ascending order."


@pytest.fixture
def sae(workers: Workers, media_root: Path) -> Sae:
    """An SAE on disk with no run: the worker only ever answers live requests."""
    language_model = factories.language_model_make()
    factories.sae_lens_write(media_root / "saes" / "live", d_in=language_model.d_model)
    sae = factories.sae_make(language_model, slug="0-res-live", d_sae=48, files_dir="saes/live")
    workers.start()
    return sae


def _direct(sae: Sae, feature: int | None) -> TextActivations:
    model = load_language_model(ModelSource(kind="hf_local", name_or_path=str(factories.tiny_model_dir())))
    loaded = sae_load(sae.files_path)
    if feature is None:
        return top_features_on_text(model, loaded, sae.hook_name, TEXT, 5)
    return feature_activations_on_text(model, loaded, sae.hook_name, TEXT, feature)


def _post(path: str, body: dict[str, Any]) -> Any:
    response = Client().post(path, json.dumps(body), content_type="application/json")
    assert response.status_code == 200, response.content
    return response.json()


def _text(language_model: LanguageModel, found: TextActivations) -> list[str]:
    return tokens_text(vocabulary_for(language_model), found.token_ids.tolist())


def test_activation_new_is_computed_by_a_worker(sae: Sae) -> None:
    expected = _direct(sae, None)
    feature = int(expected.features[0])
    body = _post("/api/activation/new", {"feature": {"modelId": "tiny-llama", "source": sae.slug,
                                                     "index": str(feature)}, "customText": TEXT})
    assert (body["modelId"], body["layer"], body["index"]) == ("tiny-llama", sae.slug, feature)
    assert body["tokens"] == _text(sae.language_model, expected)
    np.testing.assert_allclose(body["values"], expected.values[0], rtol=1e-5, atol=1e-6)
    assert body["maxValue"] == max(body["values"][1:]) > 0
    assert body["values"][body["maxValueTokenIndex"]] == body["maxValue"]


def test_search_all_ranks_the_features_a_worker_found(sae: Sae) -> None:
    expected = _direct(sae, None)
    body = _post("/api/search-all", {"modelId": "tiny-llama", "sourceSet": "res-live", "text": TEXT,
                                     "numResults": 5})
    assert [result["index"] for result in body["result"]] == expected.features.tolist()
    assert body["tokens"] == _text(sae.language_model, expected)
    maxima = [result["maxValue"] for result in body["result"]]
    assert maxima == sorted(maxima, reverse=True) and maxima[-1] > 0
    for result, values in zip(body["result"], expected.values, strict=True):
        assert (result["modelId"], result["layer"]) == ("tiny-llama", sae.slug)
        np.testing.assert_allclose(result["values"], values, rtol=1e-5, atol=1e-6)


def test_a_live_worker_answers_while_the_run_worker_computes(workers: Workers, settings: Any, tmp_path: Path) -> None:
    """The run worker (both queues, like `make worker`) is held inside a slow shard; the live-only worker (like
    `make live-worker`) answers typed text before that shard ends."""
    settings.ATLAS_RUN_BATCH_SIZE = 2
    language_model = factories.language_model_make()
    dataset = factories.dataset_make(language_model, n_sequences=8)
    client = Client()
    client.force_login(factories.user_make())
    files = factories.sae_upload_files(factories.sae_lens_write(tmp_path / "sae", d_in=language_model.d_model))
    sae = factories.sae_upload_post(client, dataset, files, slug="0-res-busy")
    # Started first: a worker takes seconds to start, which on a busy machine would outlast the slow shard.
    live = workers.start(live_only=True)
    workers.start(batch_sleep=3.0)
    run = DashboardRun.objects.get(sae=sae)
    deadline = time.monotonic() + 60
    while run.progress_done == 0 and time.monotonic() < deadline:  # inside the first shard's batches
        time.sleep(0.2)
        run.refresh_from_db()
    body = _post("/api/activation/new", {"feature": {"modelId": "tiny-llama", "source": sae.slug, "index": "0"},
                                         "customText": TEXT})
    run.refresh_from_db()
    assert not run.is_finished, "the run ended before the live answer; the test proves nothing"
    assert body["tokens"] and len(body["values"]) == len(body["tokens"])
    assert any("text_activations" in line and "succeeded" in line for line in live.log), "".join(live.log[-20:])
