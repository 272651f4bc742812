"""A vector's page at its address /<model>/<source>/<index>: its facts, its values for the plot, a delete button
for its owner; SAE uploads may not take a vector source's id."""

import json
import re
from pathlib import Path

import pytest
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.services import SaeUploadError
from atlas.vectors.models import Vector
from tests import factories


@pytest.fixture
def vector(language_model: LanguageModel) -> Vector:
    values = [0.0] * language_model.d_model
    values[:2] = [3.0, -4.0]
    result: Vector = factories.vector_make(language_model, factories.user_make("carol"), values=values)
    return result


def page_address(vector: Vector) -> str:
    return f"/tiny-llama/1-vectors-resid-pre/{vector.pk}"


def logged_in(username: str) -> Client:
    from django.contrib.auth import get_user_model

    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return client


def test_page_shows_the_vector_facts(vector: Vector) -> None:
    response = Client().get(page_address(vector))
    assert response.status_code == 200
    page = response.content.decode()
    assert "<h1>joy - sorrow</h1>" in page
    for title, value in [("Model", "tiny-llama"), ("Hook", "<code>blocks.1.hook_resid_pre</code>"),
                         ("Norm", "5.0000"), ("Default strength", "8"), ("Owner", "carol")]:
        assert f"<dt>{title}</dt><dd>{value}</dd>" in page


def test_page_carries_the_values_for_its_plot_without_inline_script(vector: Vector) -> None:
    page = Client().get(page_address(vector)).content.decode()
    data = re.search(r'<script id="vector-values" type="application/json">(.*?)</script>', page, re.S)
    assert data and json.loads(data.group(1)) == [3.0, -4.0] + [0.0] * (vector.language_model.d_model - 2)
    assert 'src="/static/atlas/vector.js"' in page
    assert not re.search(r"<script>(?!</script>)", page)


def test_page_answers_with_a_trailing_slash(vector: Vector) -> None:
    assert Client().get(page_address(vector) + "/").status_code == 200


def test_unknown_vector_is_a_404(vector: Vector) -> None:
    response = Client().get(f"/tiny-llama/1-vectors-resid-post/{vector.pk}")
    assert response.status_code == 404


def test_only_the_owner_sees_the_delete_button(vector: Vector) -> None:
    factories.user_make("dave")
    assert "Delete this vector" in logged_in("carol").get(page_address(vector)).content.decode()
    assert "Delete this vector" not in logged_in("dave").get(page_address(vector)).content.decode()
    assert "Delete this vector" not in Client().get(page_address(vector)).content.decode()


def test_owner_deletes_from_the_page(vector: Vector) -> None:
    response = logged_in("carol").post(page_address(vector) + "/delete")
    assert (response.status_code, response["Location"]) == (302, "/")
    assert not Vector.objects.exists()


def test_someone_else_may_not_delete_from_the_page(vector: Vector) -> None:
    factories.user_make("dave")
    response = logged_in("dave").post(page_address(vector) + "/delete")
    assert response.status_code == 403
    assert Vector.objects.exists()


def test_deleting_needs_a_login(vector: Vector) -> None:
    response = Client().post(page_address(vector) + "/delete")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert Vector.objects.exists()


@pytest.mark.parametrize("slug", ["3-vectors-resid-pre", "0-vectors-resid-post"])
def test_an_sae_may_not_take_a_vector_source_id(dataset: Dataset, sae_dir: Path, slug: str) -> None:
    with pytest.raises(SaeUploadError) as refused:
        factories.sae_uploaded(dataset, sae_dir, owner=None, slug=slug)
    assert refused.value.field == "slug"
    assert "vector source" in refused.value.message
