"""POST /api/vector/dashboard {modelId, source, index, datasetId?, bias?}: the owner's (or staff's) x-api-key queues
the vector's dashboard; every refusal is a JSON 4xx naming the problem, with nothing stored."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import AbstractUser
from django.test import Client

from atlas.accounts.services import api_key_create
from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, Sae
from atlas.vectors.models import Vector
from tests import factories


@pytest.fixture
def owner(db: None) -> AbstractUser:
    return factories.user_make("carol")


@pytest.fixture
def vector(language_model: LanguageModel, owner: AbstractUser) -> Vector:
    made: Vector = factories.vector_make(language_model, owner)
    return made


def post(body: dict[str, Any], user: AbstractUser | None) -> Any:
    headers = {"x-api-key": api_key_create(user=user).secret} if user else {}
    return Client().post("/api/vector/dashboard", json.dumps(body), content_type="application/json", headers=headers)


def body(vector: Vector, **overrides: Any) -> dict[str, Any]:
    return {"modelId": vector.language_model.slug, "source": vector.source, "index": vector.pk, **overrides}


def test_it_queues_the_dashboard_and_says_where(vector: Vector, dataset: Dataset, owner: AbstractUser) -> None:
    response = post(body(vector, datasetId=dataset.slug, bias=-0.5), owner)
    assert response.status_code == 201, response.json()
    answer = response.json()
    sae = Sae.objects.get()
    assert (answer["modelId"], answer["layer"], answer["index"]) == ("tiny-llama", sae.slug, 0)
    assert sae.slug == f"1-vectors-{vector.pk}-dash"
    assert answer["url"] == f"http://testserver/tiny-llama/{sae.slug}/0"
    assert answer["run"]["id"] == sae.runs.get().pk and answer["run"]["status"] == "queued"
    assert sae.cfg["atlas_vectors"][0]["bias"] == -0.5


def test_without_a_dataset_it_takes_the_models_newest(vector: Vector, dataset: Dataset, owner: AbstractUser) -> None:
    newer = factories.dataset_make(vector.language_model, slug="newer", n_sequences=4)
    assert post(body(vector), owner).status_code == 201
    assert DashboardRun.objects.get().dataset == newer != dataset


def test_it_needs_an_api_key(vector: Vector, dataset: Dataset) -> None:
    response = post(body(vector), None)
    assert response.status_code == 401
    assert Sae.objects.count() == 0


def test_someone_elses_key_is_forbidden(vector: Vector, dataset: Dataset) -> None:
    response = post(body(vector), factories.user_make("dave"))
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden" and "Only carol, who made" in response.json()["message"]
    assert Sae.objects.count() == 0


def test_a_dataset_of_another_model_is_a_400(vector: Vector, dataset: Dataset, owner: AbstractUser) -> None:
    factories.dataset_make(factories.language_model_make("other-llama"), slug="other-docs")
    response = post(body(vector, datasetId="other-docs"), owner)
    assert response.status_code == 400
    assert response.json()["message"].startswith("'datasetId': dataset 'other-docs' was tokenized for other-llama")
    assert Sae.objects.count() == 0


@pytest.mark.parametrize(("overrides", "message"), [
    ({"datasetId": "nowhere"}, "No dataset 'nowhere'"),
    ({"index": 999_999}, "tiny-llama has no vector 1-vectors-resid-pre/999999"),
])
def test_what_names_nothing_is_a_404(vector: Vector, dataset: Dataset, owner: AbstractUser,
                                     overrides: dict[str, Any], message: str) -> None:
    response = post(body(vector, **overrides), owner)
    assert response.status_code == 404
    assert response.json()["message"].startswith(message)


def test_a_model_without_datasets_is_a_404(vector: Vector, owner: AbstractUser) -> None:
    response = post(body(vector), owner)
    assert response.status_code == 404
    assert "tiny-llama has no dataset" in response.json()["message"]


def test_a_bias_that_is_not_a_number_is_a_400(vector: Vector, dataset: Dataset, owner: AbstractUser) -> None:
    response = post(body(vector, bias="high"), owner)
    assert response.status_code == 400 and "bias" in response.json()["message"]
    assert Sae.objects.count() == 0


def test_a_second_dashboard_is_a_409(vector: Vector, dataset: Dataset, owner: AbstractUser) -> None:
    assert post(body(vector), owner).status_code == 201
    response = post(body(vector), owner)
    assert response.status_code == 409 and "holds this dashboard already" in response.json()["message"]
    assert Sae.objects.count() == 1
