"""Neuronpedia's own client, unmodified, keeps lists on a live Atlas server: ListRequest.new, add_items, get and
get_owned (and NPList's class methods with the key set globally), over real HTTP with an x-api-key."""

from collections.abc import Iterator

import neuronpedia
import pytest
import requests
from django.contrib.auth.models import User
from neuronpedia.np_list import NPList, NPListItem
from neuronpedia.requests.base_request import NPRequest, NPUnauthorizedError
from neuronpedia.requests.list_request import ListRequest
from pytest_django.live_server_helper import LiveServer

from atlas.accounts.services import api_key_create
from atlas.features.models import Feature
from atlas.lists.models import FeatureList, ListItem
from tests import factories


@pytest.fixture
def server(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The client takes its server from NPRequest.BASE_URL (neuronpedia.org/api unless USE_LOCALHOST)."""
    monkeypatch.setattr(NPRequest, "BASE_URL", f"{live_server.url}/api")
    yield live_server.url


def person(username: str) -> User:
    user = factories.user_make(username)
    assert isinstance(user, User)
    return user


@pytest.fixture
def key(published_feature: Feature) -> str:
    return api_key_create(user=person("carol")).secret


def items(*indices: int) -> list[NPListItem]:
    return [NPListItem(model_id="tiny-llama", source="0-res-8", index=str(index), description=f"note {index}")
            for index in indices]


def test_the_client_makes_a_list_adds_features_and_reads_it_back(server: str, key: str) -> None:
    lists = ListRequest(api_key=key)
    made = lists.new("joy features", "happy ones")
    stored = FeatureList.objects.get()
    assert (made.id, made.name, made.description, made.items) == (stored.pk, "joy features", "happy ones", [])
    assert stored.owner.username == "carol"

    grown = lists.add_items(made, items(3, 5))
    assert [(item.model_id, item.source, item.index) for item in grown.items] == [
        ("tiny-llama", "0-res-8", "3"), ("tiny-llama", "0-res-8", "5")]
    assert [(item.index, item.note) for item in ListItem.objects.order_by("created", "pk")] == [
        (3, "note 3"), (5, "note 5")]

    read = lists.get(made.id)
    assert (read.id, read.name, read.description) == (made.id, "joy features", "happy ones")
    assert [(item.model_id, item.source, item.index) for item in read.items] == [
        ("tiny-llama", "0-res-8", "3"), ("tiny-llama", "0-res-8", "5")]
    # The list's page, which the answers' url names, shows the features added.
    page = requests.get(f"{server}/lists/{made.id}", timeout=10)
    assert page.status_code == 200 and "/tiny-llama/0-res-8/5" in page.text


def test_the_clients_list_classes_use_the_global_key(server: str, key: str) -> None:
    with neuronpedia.api_key(key):
        made = NPList.new("sad features")
        made.add_items(items(4))
        assert [item.index for item in NPList.get(made.id).items] == ["4"]
        assert [(owned.id, owned.name) for owned in NPList.get_owned()] == [(made.id, "sad features")]


def test_the_client_is_refused_without_a_valid_key(server: str, key: str) -> None:
    with pytest.raises(NPUnauthorizedError):
        ListRequest(api_key="not-a-key").new("nope")
    assert not FeatureList.objects.exists()


def test_the_client_gets_a_404_for_someone_elses_private_list(server: str, key: str) -> None:
    private = ListRequest(api_key=key)
    made = private.new("mine")
    FeatureList.objects.filter(pk=made.id).update(public=False)
    other_key = api_key_create(user=person("dave")).secret
    with pytest.raises(requests.exceptions.HTTPError, match="Resource not found: 404"):
        ListRequest(api_key=other_key).get(made.id)
