"""POST /api/list/new, add-features, remove, get, list: the bodies Neuronpedia's ListRequest sends, an x-api-key
for writes, private lists for their owner alone, refusals that name the field and store nothing."""

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from atlas.accounts.services import api_key_create
from atlas.features.models import Feature
from atlas.lists.models import LIST_FEATURES_MAX, FeatureList, ListItem
from tests import factories


def post(path: str, body: Any = None, key: str | None = None) -> Any:
    headers = {"x-api-key": key} if key else {}
    text = "" if body is None else json.dumps(body)
    return Client().post(path, text, content_type="application/json", headers=headers)


def person(username: str) -> User:
    user = factories.user_make(username)
    assert isinstance(user, User)
    return user


@pytest.fixture
def key(published_feature: Feature) -> str:
    return api_key_create(user=person("carol")).secret


@pytest.fixture
def other_key(published_feature: Feature) -> str:
    return api_key_create(user=person("dave")).secret


def feature(index: int | str = 3, note: str = "", layer: str = "0-res-8") -> dict[str, Any]:
    return {"modelId": "tiny-llama", "layer": layer, "index": index, "description": note}


def made(key: str, **fields: Any) -> dict[str, Any]:
    response = post("/api/list/new", {"name": "joy features", "description": "happy ones", **fields}, key)
    assert response.status_code == 201, response.json()
    answer: dict[str, Any] = response.json()
    return answer


def added(key: str, list_id: str, *features: dict[str, Any]) -> Any:
    return post("/api/list/add-features", {"listId": list_id, "featuresToAdd": list(features)}, key)


def test_new_list_answers_with_its_id_name_and_no_features(key: str) -> None:
    answer = made(key)
    stored = FeatureList.objects.get()
    assert answer == {"id": stored.pk, "name": "joy features", "description": "happy ones", "isPublic": True,
                      "ownerUsername": "carol", "createdAt": stored.created.isoformat(),
                      "url": f"http://testserver/lists/{stored.pk}", "featureCount": 0, "neurons": []}
    assert stored.owner.username == "carol"


def test_a_list_may_be_made_private(key: str) -> None:
    assert made(key, isPublic=False)["isPublic"] is False
    assert FeatureList.objects.get().public is False


def test_add_features_answers_them_as_stored_and_get_lists_them_in_order(key: str) -> None:
    list_id = made(key)["id"]
    response = added(key, list_id, feature(5, "second"), feature("3", "joy"))
    assert response.status_code == 200
    assert [(item["modelId"], item["layer"], item["index"], item["description"]) for item in response.json()] == [
        ("tiny-llama", "0-res-8", "5", "second"), ("tiny-llama", "0-res-8", "3", "joy")]
    got = post("/api/list/get", {"listId": list_id}).json()
    assert [(item["index"], item["description"]) for item in got["neurons"]] == [("5", "second"), ("3", "joy")]
    assert got["featureCount"] == 2


def test_adding_a_listed_feature_again_keeps_its_place_and_takes_the_new_note(key: str) -> None:
    list_id = made(key)["id"]
    added(key, list_id, feature(3, "first"), feature(5))
    assert added(key, list_id, feature(3, "better")).status_code == 200
    assert [(item.index, item.note) for item in ListItem.objects.order_by("created", "pk")] == [
        (3, "better"), (5, "")]


def test_remove_takes_a_feature_off_and_answers_the_list(key: str) -> None:
    list_id = made(key)["id"]
    added(key, list_id, feature(3), feature(5))
    response = post("/api/list/remove", {"listId": list_id, "modelId": "tiny-llama", "layer": "0-res-8",
                                         "index": 3}, key)
    assert response.status_code == 200
    assert [item["index"] for item in response.json()["neurons"]] == ["5"]
    assert list(ListItem.objects.values_list("index", flat=True)) == [5]


def test_removing_a_feature_the_list_lacks_is_a_404(key: str) -> None:
    list_id = made(key)["id"]
    response = post("/api/list/remove", {"listId": list_id, "modelId": "tiny-llama", "layer": "0-res-8",
                                         "index": 4}, key)
    assert response.status_code == 404
    assert response.json()["message"] == f"List '{list_id}' holds no feature tiny-llama/0-res-8/4."


def test_list_answers_the_key_holders_lists_newest_first_with_counts(key: str, other_key: str) -> None:
    older, newer = made(key, name="older")["id"], made(key, name="newer", isPublic=False)["id"]
    made(other_key, name="not carol's")
    added(key, older, feature(3), feature(4))
    response = post("/api/list/list", None, key)
    assert response.status_code == 200
    assert [(entry["id"], entry["name"], entry["featureCount"], entry["isPublic"]) for entry in response.json()] == [
        (newer, "newer", 0, False), (older, "older", 2, True)]


def test_get_of_a_public_list_needs_no_key(key: str) -> None:
    list_id = made(key)["id"]
    assert post("/api/list/get", {"listId": list_id}).json()["name"] == "joy features"


def test_a_private_list_is_not_found_for_anyone_but_its_owner(key: str, other_key: str) -> None:
    list_id = made(key, isPublic=False)["id"]
    message = f"No list '{list_id}'; POST /api/list/list lists yours."
    for asker in (None, other_key):
        response = post("/api/list/get", {"listId": list_id}, asker)
        assert (response.status_code, response.json()["message"]) == (404, message)
        assert added(other_key, list_id, feature(3)).status_code == 404
    assert post("/api/list/get", {"listId": list_id}, key).status_code == 200
    assert not ListItem.objects.exists()


def test_get_with_a_key_that_is_not_valid_is_a_401(key: str) -> None:
    list_id = made(key)["id"]
    response = post("/api/list/get", {"listId": list_id}, "not-a-key")
    assert (response.status_code, response.json()["error"]) == (401, "unauthorized")


def test_only_the_owner_changes_a_public_list(key: str, other_key: str) -> None:
    list_id = made(key)["id"]
    added(key, list_id, feature(3))
    response = added(other_key, list_id, feature(5))
    assert (response.status_code, response.json()["error"]) == (403, "forbidden")
    assert "Only carol" in response.json()["message"]
    removal = post("/api/list/remove", {"listId": list_id, "modelId": "tiny-llama", "layer": "0-res-8",
                                        "index": 3}, other_key)
    assert removal.status_code == 403
    assert list(ListItem.objects.values_list("index", flat=True)) == [3]


@pytest.mark.parametrize("path", ["/api/list/new", "/api/list/add-features", "/api/list/remove", "/api/list/list"])
def test_writes_and_the_owners_lists_need_a_key(published_feature: Feature, path: str) -> None:
    response = post(path, {"name": "x"})
    assert (response.status_code, response.json()["error"]) == (401, "unauthorized")
    assert not FeatureList.objects.exists()


@pytest.mark.parametrize(("body", "message"), [
    ({"description": "x"}, "'name' is required."),
    ({"name": "   "}, "'name' is empty; name the list, e.g. 'joy features'."),
    ({"name": "x" * 201}, "'name' must be at most 200 characters long."),
    ({"name": "a\u0000b"}, "'name' holds a NUL character (\\u0000); remove it."),
    ({"name": "x", "isPublic": "yes"}, "'isPublic' input should be a valid boolean."),
])
def test_a_refused_new_list_is_a_400_naming_the_field_and_stores_nothing(key: str, body: dict[str, Any],
                                                                        message: str) -> None:
    response = post("/api/list/new", body, key)
    assert (response.status_code, response.json()["message"]) == (400, message)
    assert not FeatureList.objects.exists()


@pytest.mark.parametrize(("features", "message"), [
    ([], "'featuresToAdd' must hold at least 1 item(s)."),
    ([feature(3), feature(8)], "'featuresToAdd[1].index': tiny-llama/0-res-8 has features 0 to 7; there is no "
                               "feature 8."),
    ([feature(3), feature(1, layer="0-res-nope")], "'featuresToAdd[1].layer': there is no SAE "
                                                   "tiny-llama/0-res-nope; the home page lists the SAEs this "
                                                   "server has."),
    ([feature(-1)], "'featuresToAdd[0].index' must not be negative."),
    ([{**feature(3), "description": "a\u0000b"}], "'featuresToAdd[0].description' holds a NUL character (\\u0000); "
                                                  "remove it."),
    ([{"layer": "0-res-8", "index": 3}], "'featuresToAdd[0].modelId' is required."),
])
def test_refused_features_are_a_400_naming_the_entry_and_none_are_stored(key: str, features: list[Any],
                                                                         message: str) -> None:
    list_id = made(key)["id"]
    response = added(key, list_id, *features)
    assert (response.status_code, response.json()["message"]) == (400, message)
    assert not ListItem.objects.exists()


def test_a_list_holds_at_most_its_limit(key: str, published_feature: Feature) -> None:
    factories.sae_make(published_feature.run.sae.language_model, slug="0-res-wide", d_sae=LIST_FEATURES_MAX + 1)
    list_id = made(key)["id"]
    wide = [{"modelId": "tiny-llama", "layer": "0-res-wide", "index": index} for index in range(LIST_FEATURES_MAX)]
    assert added(key, list_id, *wide).status_code == 200
    response = added(key, list_id, {"modelId": "tiny-llama", "layer": "0-res-wide", "index": LIST_FEATURES_MAX})
    assert response.status_code == 400
    assert response.json()["message"].startswith(f"'featuresToAdd': the list holds {LIST_FEATURES_MAX} features")
    assert ListItem.objects.count() == LIST_FEATURES_MAX


def test_adding_to_a_list_that_does_not_exist_is_a_404(key: str) -> None:
    response = added(key, "nosuchlist", feature(3))
    assert (response.status_code, response.json()["error"]) == (404, "not_found")
