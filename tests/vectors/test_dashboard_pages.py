"""A vector's dashboard on its pages: the vector page's "Compute dashboard" form (its owner or staff), the run it
shows once one exists, and the feature page of the dashboard, which says whose dashboard it is and links back."""

import pytest
from django.contrib.auth.models import AbstractUser
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, Sae
from atlas.saes.services import vector_dashboard_start
from atlas.vectors.models import Vector
from tests import factories

FORM_BUTTON = "<button>Compute dashboard</button>"


@pytest.fixture
def owner(db: None) -> AbstractUser:
    return factories.user_make("carol")


@pytest.fixture
def vector(language_model: LanguageModel, owner: AbstractUser) -> Vector:
    made: Vector = factories.vector_make(language_model, owner)
    return made


def page_address(vector: Vector) -> str:
    return f"/tiny-llama/{vector.source}/{vector.pk}"


def client_of(user: AbstractUser) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_the_owner_sees_the_form_with_the_models_datasets(vector: Vector, dataset: Dataset,
                                                         owner: AbstractUser) -> None:
    factories.dataset_make(factories.language_model_make("other-llama"), slug="other-docs")
    page = client_of(owner).get(page_address(vector)).content.decode()
    assert FORM_BUTTON in page
    assert f'action="{page_address(vector)}/dashboard"' in page
    assert '<option value="docstrings">' in page and "other-docs" not in page


@pytest.mark.parametrize("who", ["anonymous", "dave"])
def test_others_see_no_form(vector: Vector, dataset: Dataset, who: str) -> None:
    client = Client() if who == "anonymous" else client_of(factories.user_make(who))
    page = client.get(page_address(vector)).content.decode()
    assert FORM_BUTTON not in page and "No dashboard yet" in page


def test_the_form_queues_the_dashboard_and_the_page_follows_its_run(vector: Vector, dataset: Dataset,
                                                                    owner: AbstractUser) -> None:
    client = client_of(owner)
    response = client.post(f"{page_address(vector)}/dashboard", {"dataset": dataset.slug, "bias": "-0.25"})
    assert response.status_code == 302 and response["Location"] == page_address(vector)
    sae = Sae.objects.get()
    assert sae.cfg["atlas_vectors"][0]["bias"] == -0.25
    page = client.get(page_address(vector)).content.decode()
    run = DashboardRun.objects.get()
    assert f"Run {run.pk}: <span class=\"status status-queued\">queued</span>" in page
    assert f'href="/tiny-llama/{sae.slug}/"' in page
    assert FORM_BUTTON not in page


def test_the_form_refuses_someone_elses_vector(vector: Vector, dataset: Dataset) -> None:
    response = client_of(factories.user_make("dave")).post(f"{page_address(vector)}/dashboard",
                                                           {"dataset": dataset.slug})
    assert response.status_code == 403
    assert Sae.objects.count() == 0


def test_the_form_says_what_is_wrong_with_a_bias(vector: Vector, dataset: Dataset, owner: AbstractUser) -> None:
    response = client_of(owner).post(f"{page_address(vector)}/dashboard", {"dataset": dataset.slug, "bias": "x"},
                                     follow=True)
    assert "&#x27;bias&#x27; must be a number" in response.content.decode()
    assert Sae.objects.count() == 0


def test_the_form_needs_a_login(vector: Vector, dataset: Dataset) -> None:
    response = Client().post(f"{page_address(vector)}/dashboard", {"dataset": dataset.slug})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert Sae.objects.count() == 0


def published(vector: Vector, dataset: Dataset, owner: AbstractUser) -> Sae:
    sae = vector_dashboard_start(vectors=[vector], dataset=dataset, owner=owner)
    factories.published_run_make(sae, dataset, factories.dashboards_empty(1, neighbours=0))
    sae.refresh_from_db()
    return sae


def test_the_vector_page_links_to_its_published_dashboard(vector: Vector, dataset: Dataset,
                                                          owner: AbstractUser) -> None:
    sae = published(vector, dataset, owner)
    page = Client().get(page_address(vector)).content.decode()
    assert f'<a class="button" href="/tiny-llama/{sae.slug}/0">Dashboard of this vector</a>' in page


def test_the_feature_page_says_whose_dashboard_it_is_and_links_back(vector: Vector, dataset: Dataset,
                                                                    owner: AbstractUser) -> None:
    sae = published(vector, dataset, owner)
    page = Client().get(f"/tiny-llama/{sae.slug}/0").content.decode()
    assert f'The dashboard of vector\n  <a href="{page_address(vector)}">joy - sorrow</a>' in page
    assert "steers with v&#x27;s unit direction" in page or "steers with v's unit direction" in page
    assert f'source={sae.slug}&amp;index=0">Steer with this feature' in page


def test_the_feature_page_of_a_deleted_vector_still_names_it(vector: Vector, dataset: Dataset,
                                                             owner: AbstractUser) -> None:
    sae = published(vector, dataset, owner)
    vector_id = vector.pk
    vector.delete()
    page = Client().get(f"/tiny-llama/{sae.slug}/0").content.decode()
    assert f"joy - sorrow (vector {vector_id}, since deleted)" in page


def test_an_uploaded_saes_feature_page_has_no_vector_note(published_feature: object) -> None:
    page = Client().get("/tiny-llama/0-res-8/3").content.decode()
    assert "The dashboard of vector" not in page
