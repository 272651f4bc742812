"""POST /api/explanation/search: a model's labels matching a query, best first, 20 a page, under Neuronpedia's names;
an unknown model or SAE is a 404 naming the field, an empty query a 400 naming 'query'."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from atlas.explanations.services import explanation_create
from atlas.lms.models import LanguageModel
from atlas.saes.models import Sae
from tests import factories

SEARCH = "/api/explanation/search"


def _search(body: Any, path: str = SEARCH) -> Any:
    return Client().post(path, json.dumps(body), content_type="application/json")


@pytest.fixture
def author(db: None) -> User:
    user = factories.user_make()
    assert isinstance(user, User)
    return user


@pytest.fixture
def saes(language_model: LanguageModel) -> tuple[Sae, Sae]:
    return factories.sae_make(language_model, slug="0-res-8"), factories.sae_make(language_model, slug="1-res-8")


def _label(sae: Sae, index: int, description: str, author: User) -> None:
    explanation_create(sae=sae, index=index, description=description, author=author)


@pytest.mark.parametrize("path", [SEARCH, f"{SEARCH}/"])
def test_it_finds_the_models_matching_labels_under_neuronpedias_names(saes: tuple[Sae, Sae], author: User,
                                                                      path: str) -> None:
    first, second = saes
    _label(first, 3, "words about happiness", author)
    _label(second, 5, "happy endings of stories", author)
    _label(first, 4, "closing brackets", author)
    answer = _search({"modelId": "tiny-llama", "query": "happy"}, path).json()
    assert answer["request"] == {"modelId": "tiny-llama", "query": "happy", "layers": ["0-res-8", "1-res-8"],
                                 "offset": 0}
    found = {(result["layer"], result["index"], result["description"]) for result in answer["results"]}
    assert found == {("0-res-8", 3, "words about happiness"), ("1-res-8", 5, "happy endings of stories")}
    assert all(result["modelId"] == "tiny-llama" and result["authorUsername"] == "alice"
               for result in answer["results"])
    assert (answer["resultsCount"], answer["hasMore"], answer["nextOffset"]) == (2, False, None)


def test_the_better_match_comes_first(saes: tuple[Sae, Sae], author: User) -> None:
    first, _ = saes
    _label(first, 1, "joy", author)
    _label(first, 2, "joy, joyful, joyous and the joy of joy", author)
    results = _search({"modelId": "tiny-llama", "query": "joy"}).json()["results"]
    assert [result["index"] for result in results] == [2, 1]


def test_layers_keep_the_search_to_those_saes(saes: tuple[Sae, Sae], author: User) -> None:
    first, second = saes
    _label(first, 3, "words about happiness", author)
    _label(second, 5, "happy endings of stories", author)
    answer = _search({"modelId": "tiny-llama", "query": "happy", "layers": ["1-res-8", "1-res-8"]}).json()
    assert [(result["layer"], result["index"]) for result in answer["results"]] == [("1-res-8", 5)]
    assert answer["request"]["layers"] == ["1-res-8"]


def test_another_models_labels_never_match(saes: tuple[Sae, Sae], author: User) -> None:
    other = factories.sae_make(factories.language_model_make("other-llama"), slug="0-res-8")
    _label(other, 3, "words about happiness", author)
    answer = _search({"modelId": "tiny-llama", "query": "happiness"}).json()
    assert (answer["results"], answer["resultsCount"]) == ([], 0)


def test_results_come_twenty_a_page_and_the_last_page_says_so(saes: tuple[Sae, Sae], author: User) -> None:
    first, _ = saes
    for index in range(25):
        _label(first, index % 8, f"numbers in lists, case {index}", author)
    page = _search({"modelId": "tiny-llama", "query": "numbers"}).json()
    assert (page["resultsCount"], page["hasMore"], page["nextOffset"]) == (20, True, 20)
    rest = _search({"modelId": "tiny-llama", "query": "numbers", "offset": page["nextOffset"]}).json()
    assert (rest["resultsCount"], rest["hasMore"], rest["nextOffset"]) == (5, False, None)
    shown = [result["description"] for result in page["results"] + rest["results"]]
    assert sorted(shown) == sorted(f"numbers in lists, case {index}" for index in range(25))


def test_exactly_a_page_of_results_has_no_more(saes: tuple[Sae, Sae], author: User) -> None:
    first, _ = saes
    for index in range(20):
        _label(first, index % 8, f"numbers in lists, case {index}", author)
    page = _search({"modelId": "tiny-llama", "query": "numbers"}).json()
    assert (page["resultsCount"], page["hasMore"], page["nextOffset"]) == (20, False, None)


@pytest.mark.parametrize(("body", "words"), [
    ({"modelId": "nope", "query": "happy"}, "'modelId' names no model: No model 'nope'."),
    ({"modelId": "tiny-llama", "query": "happy", "layers": ["0-res-8", "9-res-1"]},
     "'layers[1]' names no SAE of the model: Model 'tiny-llama' has no SAE '9-res-1'."),
])
def test_an_unknown_model_or_sae_is_a_404_naming_the_field(saes: tuple[Sae, Sae], body: dict[str, Any],
                                                           words: str) -> None:
    response = _search(body)
    assert (response.status_code, response.json()["error"]) == (404, "not_found")
    assert words in response.json()["message"]


@pytest.mark.parametrize(("body", "words"), [
    ({"modelId": "tiny-llama", "query": ""}, "'query' is empty; type words to search the labels for."),
    ({"modelId": "tiny-llama", "query": " \n"}, "'query' is empty; type words to search the labels for."),
    ({"modelId": "tiny-llama"}, "'query' is required."),
    ({"modelId": "tiny-llama", "query": 3}, "'query' must be a string."),
    ({"modelId": "tiny-llama", "query": "x" * 501}, "'query' must be at most 500 characters long."),
    ({"modelId": "tiny-llama", "query": "happy", "offset": -1}, "'offset' must not be negative."),
    ({"modelId": "tiny-llama", "query": "happy", "layers": []}, "'layers' must hold at least 1 item(s)."),
    ({"query": "happy"}, "'modelId' is required."),
])
def test_a_bad_body_is_a_400_naming_the_field(saes: tuple[Sae, Sae], body: dict[str, Any], words: str) -> None:
    response = _search(body)
    assert (response.status_code, response.json()["error"]) == (400, "bad_request"), response.content
    assert words in response.json()["message"]


def test_searching_needs_post(db: None) -> None:
    response = Client().get(SEARCH)
    assert (response.status_code, response["Allow"]) == (405, "POST")
