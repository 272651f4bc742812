"""POST /api/concept/search, /api/detector/new and /api/detect through a real worker process: a small search is
answered at once and equals the worker step computed here; a large one is a job whose page polls to the same result;
detectors save a candidate and score new texts; bad input is a 400 naming the problem, and nothing is stored."""

import json
import time
from pathlib import Path
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from atlas.accounts.services import api_key_create
from atlas.concepts.models import ConceptSearch, Detector
from atlas.saes.models import Sae
from atlas.vectors.models import Vector
from tests import factories
from tests.support.workers import Workers
from workers.concepts import concept_search_answer

POSITIVES = ["Joy and gladness fill the hall.", "Happy days are here again.", "We rejoice and sing with delight.",
             "Merry hearts and glad faces.", "What a happy, joyful morning.", "Cheer and mirth all night long."]
NEGATIVES = ["Open the file and read it.", "Return the number of items.", "Split the string at the separator.",
             "Close the connection to the server.", "Raise an error if the key is missing.",
             "Write the bytes to the stream."]
BODY: dict[str, Any] = {"modelId": "tiny-llama", "sources": ["0-res-topk"], "positives": POSITIVES,
                        "negatives": NEGATIVES, "pooling": "max"}
JOB_TIMEOUT_SECONDS = 120


@pytest.fixture
def published(db: None, media_root: Path, settings: Any) -> Sae:
    """A published SAE whose files a worker loads; the rate limit out of the way."""
    settings.ATLAS_LIVE_RATE = "10000/minute"
    language_model = factories.language_model_make()
    return factories.live_sae_published(media_root, language_model, {index: 0.01 * index for index in range(48)})


@pytest.fixture
def sae(workers: Workers, published: Sae) -> Sae:
    """published, and a worker on both queues."""
    workers.start()
    return published


def _post(path: str, body: dict[str, Any], **headers: str) -> tuple[int, Any]:
    response = Client(raise_request_exception=False).post(path, json.dumps(body), content_type="application/json",
                                                          **headers)
    return response.status_code, response.json()


def _ok(path: str, body: dict[str, Any], **headers: str) -> Any:
    status, answer = _post(path, body, **headers)
    assert status == 200, answer
    return answer


def _computed(sae: Sae) -> list[dict[str, Any]]:
    """What the worker step answers, in this process, for BODY."""
    answer = concept_search_answer({"sae_ids": [sae.pk], "positives": POSITIVES, "negatives": NEGATIVES,
                                    "pooling": "max", "dataset_id": None, "dataset_negatives": 0,
                                    "dataset_tokens": 0})
    results: list[dict[str, Any]] = answer["results"]
    return results


def _without_facts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The worker's part of the results: the web adds the source and each feature's label, density and tokens."""
    facts = {"label", "density", "topTokens", "logitTokens"}
    return [{**{name: value for name, value in result.items() if name != "source"},
             "features": [{name: value for name, value in feature.items() if name not in facts}
                          for feature in result["features"]]} for result in results]


def test_a_small_search_is_answered_at_once_with_the_workers_numbers(sae: Sae) -> None:
    answer = _ok("/api/concept/search", BODY)
    assert (answer["status"], answer["sources"], answer["nPositive"], answer["nNegative"]) == (
        "succeeded", ["0-res-topk"], 6, 6)
    assert _without_facts(answer["results"]) == _computed(sae)
    features = answer["results"][0]["features"]
    aurocs = [feature["auroc"] for feature in features]
    assert aurocs == sorted(aurocs, reverse=True)
    assert features[0]["density"] == pytest.approx(0.01 * features[0]["index"])
    assert answer["url"].endswith(f"/concepts/{answer['id']}")
    assert Client().get(f"/api/concept/search/{answer['id']}").json() == answer
    page = Client().get(f"/concepts/{answer['id']}")
    assert page.status_code == 200 and b"Probes beside features" in page.content


def test_a_large_search_is_a_job_with_progress_and_the_same_result(sae: Sae, settings: Any) -> None:
    settings.ATLAS_CONCEPT_LIVE_TEXTS = 4
    answer = _ok("/api/concept/search", BODY)
    assert answer["status"] in {"queued", "running", "succeeded"}
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    while answer["status"] in {"queued", "running"}:
        assert time.monotonic() < deadline, answer
        time.sleep(0.5)
        answer = Client().get(f"/api/concept/search/{answer['id']}").json()
    assert answer["status"] == "succeeded", answer
    assert answer["progress"] == {"done": 12, "total": 12}
    assert _without_facts(answer["results"]) == _computed(sae)


def test_several_saes_and_a_datasets_sequences_as_negatives(sae: Sae, media_root: Path) -> None:
    dataset = sae.published_run.dataset
    other = factories.live_sae_published(media_root, sae.language_model, {}, slug="0-res-other", d_sae=16,
                                         dataset=dataset)
    body = {**BODY, "sources": ["0-res-other", "0-res-topk"], "negatives": NEGATIVES[:2],
            "negativesDataset": dataset.slug, "datasetNegatives": 5, "datasetTokens": 12}
    answer = _ok("/api/concept/search", body)
    assert (answer["sources"], answer["nPositive"], answer["nNegative"]) == (["0-res-other", "0-res-topk"], 6, 7)
    request = {"sae_ids": [other.pk, sae.pk], "positives": POSITIVES, "negatives": NEGATIVES[:2], "pooling": "max",
               "dataset_id": dataset.pk, "dataset_negatives": 5, "dataset_tokens": 12}
    assert _without_facts(answer["results"]) == concept_search_answer(request)["results"]
    assert [len(result["features"]) for result in answer["results"]] == [16, 48]
    assert [result["nNegative"] for result in answer["results"]] == [7, 7]


def test_a_saved_detector_scores_new_texts_and_evaluates_on_labels(sae: Sae) -> None:
    search = _ok("/api/concept/search", BODY)
    key = api_key_create(user=factories.user_make()).secret
    status, _ = _post("/api/detector/new", {"searchId": search["id"], "source": "0-res-topk",
                                                  "candidate": "top 2 features (logistic)", "name": "joy"})
    assert status == 401
    candidate = search["results"][0]["detectors"][1]
    detector = _ok("/api/detector/new", {"searchId": search["id"], "source": "0-res-topk",
                                         "candidate": candidate["name"], "name": "joy"}, HTTP_X_API_KEY=key)
    assert (detector["features"], detector["weights"], detector["threshold"]) == (
        candidate["features"], candidate["weights"], candidate["threshold"])
    assert detector["evaluation"] == candidate["evaluation"]
    assert Client().get(f"/api/detector/{detector['id']}").json() == detector
    texts = [POSITIVES[0], NEGATIVES[0], "A glad and happy song."]
    answer = _ok("/api/detect", {"detector": detector["id"], "texts": texts, "labels": [True, False, True]})
    for text, result in zip(texts, answer["results"], strict=True):
        assert result["text"] == text
        assert result["detected"] == (result["score"] > detector["threshold"])
        assert len(result["tokens"]) == len(result["contributions"]) and result["contributions"][0] == 0
    assert answer["evaluation"]["nPositive"] == 2 and 0 <= answer["evaluation"]["auroc"] <= 1
    page = Client().get(f"/detectors/{detector['id']}")
    assert page.status_code == 200 and b"ROC" in page.content


@pytest.mark.parametrize(("change", "named"), [
    ({"positives": []}, "positives"),
    ({"negatives": []}, "'negatives' has 0 texts"),
    ({"negatives": NEGATIVES[:2]}, "at least 4"),
    ({"positives": ["x" * 5000, *POSITIVES]}, "positives"),
    ({"positives": [" ", *POSITIVES]}, "'positives[0]' is empty"),
    ({"sources": ["0-res-elsewhere"]}, "'sources[0]' names no SAE of tiny-llama"),
    ({"modelId": "gpt-7"}, "'modelId' names no model"),
    ({"negativesDataset": "no-such-data"}, "'negativesDataset' names no dataset"),
    ({"pooling": "median"}, "pooling"),
    ({"positives": POSITIVES * 200}, "positives"),
])
def test_bad_searches_are_refused_by_name_and_store_nothing(published: Sae, settings: Any, change: dict[str, Any],
                                                            named: str) -> None:
    settings.ATLAS_CONCEPT_MAX_TEXTS = 1000
    status, answer = _post("/api/concept/search", {**BODY, **change})
    assert status == 400, answer
    assert named in answer["message"]
    assert ConceptSearch.objects.count() == 0


def test_an_sae_of_another_model_is_refused(published: Sae, media_root: Path) -> None:
    other = factories.language_model_make(slug="other-llama")
    factories.sae_make(other, slug="0-res-other", d_sae=8)
    status, answer = _post("/api/concept/search", {**BODY, "sources": ["0-res-other"]})
    assert status == 400 and "names no SAE of tiny-llama" in answer["message"]
    assert ConceptSearch.objects.count() == 0


def test_a_malformed_upload_on_the_page_is_refused_by_name(published: Sae) -> None:
    upload = SimpleUploadedFile("negatives.jsonl", b'{"text": "fine"}\n{"text": oops}\n')
    response = Client().post("/concepts", {"model": "tiny-llama", "sources": "0-res-topk", "pooling": "max",
                                           "positives": "\n".join(POSITIVES), "negatives_file": upload})
    assert response.status_code == 400
    assert b"negatives.jsonl: Line 2: not valid JSON" in response.content, response.content.decode()[-3000:]
    assert ConceptSearch.objects.count() == 0


def test_the_page_form_runs_a_search_from_pasted_and_uploaded_texts(sae: Sae) -> None:
    upload = SimpleUploadedFile("negatives.txt", "\n".join(NEGATIVES).encode())
    response = Client().post("/concepts", {"model": "tiny-llama", "sources": "0-res-topk", "pooling": "max",
                                           "positives": "\n".join(POSITIVES), "negatives_file": upload})
    assert response.status_code == 302
    search = ConceptSearch.objects.get()
    assert response["Location"] == f"/concepts/{search.pk}"
    assert (search.positives, search.negatives) == (POSITIVES, NEGATIVES)


def test_detectors_from_searches_that_lack_them_are_refused(sae: Sae) -> None:
    search = _ok("/api/concept/search", BODY)
    key = api_key_create(user=factories.user_make()).secret
    for body, named in [({"searchId": "nosuchsearch", "candidate": "best feature"}, "names no concept search"),
                        ({"searchId": search["id"], "candidate": "best of all"}, "the search proposes")]:
        status, answer = _post("/api/detector/new", {"source": "0-res-topk", "name": "x", **body},
                               HTTP_X_API_KEY=key)
        assert status == 400 and named in answer["message"], answer
    assert Detector.objects.count() == 0
    status, answer = _post("/api/detect", {"detector": "nosuchone", "texts": ["x"]})
    assert status == 404


def test_a_probe_direction_is_saved_as_a_vector_of_its_hook(sae: Sae) -> None:
    search = _ok("/api/concept/search", BODY)
    client = Client()
    client.force_login(factories.user_make())
    refused = client.post(f"/concepts/{search['id']}/vector", {"source": "0-res-topk", "probe": "median"})
    assert refused.status_code == 400 and b"'massMean' or 'logistic'" in refused.content
    assert Vector.objects.count() == 0
    response = client.post(f"/concepts/{search['id']}/vector", {"source": "0-res-topk", "probe": "massMean"})
    vector = Vector.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/tiny-llama/{vector.source}/{vector.pk}"
    assert (vector.hook_name, vector.owner.username) == (sae.hook_name, "alice")
    direction = search["results"][0]["probes"]["massMean"]["direction"]
    assert vector.values_array().tolist() == pytest.approx(direction, rel=1e-6)
