"""Rate limits on the live endpoints: counted in Redis per API key, else per logged-in user, else per address; over
the limit a JSON 429 with Retry-After that says when to retry and which setting to raise."""

import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.test import Client
from limits.storage import storage_from_string

from atlas import settings as atlas_settings
from atlas.accounts.services import api_key_create
from atlas.features.live import FeatureOnText, LiveActivations
from atlas.features.models import Feature
from atlas.ratelimit import KEY_PREFIX
from tests import factories

LIMIT = 2
SEARCH = {"modelId": "tiny-llama", "source": "0-res-8", "text": "hello"}
ACTIVATION = {"feature": {"modelId": "tiny-llama", "source": "0-res-8", "index": 3}, "customText": "hello"}


def _answer(**kwargs: Any) -> LiveActivations:
    return LiveActivations(tokens=["<s>", "hello"], features=[FeatureOnText(index=3, values=[0.0, 1.5])])


@pytest.fixture
def live(published_feature: Feature, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A low limit, no counts left from other tests, and the worker's answer stood in for (what is under test is
    the count before the work is sent)."""
    settings.ATLAS_LIVE_RATE = f"{LIMIT}/minute"
    storage_from_string(django_settings.ATLAS_RATE_LIMIT_STORAGE, key_prefix=KEY_PREFIX).reset()
    monkeypatch.setattr("atlas.features.api.top_features_live", _answer)
    monkeypatch.setattr("atlas.features.api.feature_activations_live", _answer)


def client_at(address: str | None = None, **headers: str) -> Client:
    return Client(REMOTE_ADDR=address or f"198.51.100.{uuid.uuid4().int % 250}", headers=headers)


def search(client: Client) -> int:
    status: int = client.post("/api/search-all", SEARCH, content_type="application/json").status_code
    return status


def test_the_call_after_the_limit_is_a_429_with_retry_after(live: None) -> None:
    client = client_at()
    assert [search(client) for _ in range(LIMIT)] == [200] * LIMIT
    response = client.post("/api/search-all", SEARCH, content_type="application/json")
    assert response.status_code == 429 and response["Content-Type"] == "application/json"
    assert 1 <= int(response["Retry-After"]) <= 60
    answer = response.json()
    assert answer["error"] == "too_many_requests"
    assert f"try again in {response['Retry-After']} s" in answer["message"]
    assert "ask the admin to raise ATLAS_LIVE_RATE" in answer["message"]


def test_activations_and_searches_share_the_live_count(live: None) -> None:
    client = client_at()
    assert search(client) == 200
    assert client.post("/api/activation/new", ACTIVATION, content_type="application/json").status_code == 200
    assert client.post("/api/activation/new", ACTIVATION, content_type="application/json").status_code == 429


def test_another_address_is_not_affected(live: None) -> None:
    first, second = client_at("192.0.2.1"), client_at("192.0.2.2")
    assert [search(first) for _ in range(LIMIT + 1)][-1] == 429
    assert search(second) == 200


def test_each_api_key_has_its_own_count_from_one_address(live: None) -> None:
    user = factories.user_make()
    keys = [api_key_create(user=user, name=name).secret for name in ("one", "two")]
    first, second = client_at("192.0.2.3", **{"x-api-key": keys[0]}), client_at("192.0.2.3", **{"x-api-key": keys[1]})
    assert [search(first) for _ in range(LIMIT + 1)][-1] == 429
    assert search(second) == 200


def test_a_made_up_key_counts_as_its_address(live: None) -> None:
    address = "192.0.2.4"
    assert [search(client_at(address, **{"x-api-key": f"atlas_made-up-{n}"})) for n in range(LIMIT + 1)][-1] == 429


def test_a_logged_in_user_has_their_own_count(live: None) -> None:
    alice, bob = client_at("192.0.2.5"), client_at("192.0.2.5")
    alice.force_login(factories.user_make("alice"))
    bob.force_login(factories.user_make("bob"))
    assert [search(alice) for _ in range(LIMIT + 1)][-1] == 429
    assert search(bob) == 200


def test_a_refused_body_costs_nothing(live: None) -> None:
    client = client_at()
    for _ in range(LIMIT + 1):
        assert client.post("/api/search-all", {"text": "hello"}, content_type="application/json").status_code == 400
    assert search(client) == 200


@pytest.mark.parametrize("rate", ["30 per minute", "0/minute", "30/fortnight", "minute", "-1/second"])
def test_a_rate_setting_that_is_not_a_rate_is_refused(monkeypatch: pytest.MonkeyPatch, rate: str) -> None:
    monkeypatch.setenv("ATLAS_LIVE_RATE", rate)
    with pytest.raises(ImproperlyConfigured, match=r"ATLAS_LIVE_RATE=.* is not a rate; write <count>/"):
        atlas_settings.envrate("ATLAS_LIVE_RATE", "30/minute")


def test_a_rate_setting_is_read_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLAS_LIVE_RATE", "5/second")
    assert atlas_settings.envrate("ATLAS_LIVE_RATE", "30/minute") == "5/second"


@pytest.mark.parametrize(("redis_url", "storage"), [
    ("redis+socket:///srv/atlas/var/redis.sock", "redis+unix:///srv/atlas/var/redis.sock"),
    ("redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/3"),
])
def test_the_limits_storage_is_the_platforms_redis(redis_url: str, storage: str) -> None:
    assert atlas_settings._rate_limit_storage(redis_url) == storage
