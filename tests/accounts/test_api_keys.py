"""API keys: made and revoked on the account page, shown once, stored hashed, required for API writes."""

import re

from django.test import Client

from atlas.accounts.models import ApiKey
from atlas.accounts.services import api_key_create, api_key_digest
from tests import factories


def test_account_page_needs_a_login(db: None) -> None:
    response = Client().get("/account/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_new_key_is_shown_once_and_stored_hashed(logged_in_client: Client) -> None:
    page = logged_in_client.post("/account/keys/", {"name": "laptop"}, follow=True).content.decode()
    secret = re.search(r'<code id="new-api-key">([^<]+)</code>', page).group(1)  # type: ignore[union-attr]
    api_key = ApiKey.objects.get()
    assert (api_key.name, api_key.digest) == ("laptop", api_key_digest(secret))
    assert secret not in api_key.prefix and secret.startswith(api_key.prefix)
    assert secret not in logged_in_client.get("/account/").content.decode()


def test_key_is_revoked(logged_in_client: Client) -> None:
    logged_in_client.post("/account/keys/")
    logged_in_client.post(f"/account/keys/{ApiKey.objects.get().pk}/revoke")
    assert not ApiKey.objects.exists()


def test_someone_elses_key_is_not_revoked(logged_in_client: Client) -> None:
    issued = api_key_create(user=factories.user_make("bob"))
    logged_in_client.post(f"/account/keys/{issued.api_key.pk}/revoke")
    assert ApiKey.objects.filter(pk=issued.api_key.pk).exists()


def _write_with_key(**headers: str) -> tuple[int, str]:
    response = Client().post("/api/explanation/new", "{}", content_type="application/json", headers=headers)
    return response.status_code, response.json()["message"]


def test_a_write_without_a_key_says_where_to_make_one(db: None) -> None:
    assert _write_with_key() == (401, "Send an API key in the x-api-key header; make one at /account/.")
    assert _write_with_key(**{"x-api-key": "  "})[1].startswith("Send an API key")


def test_a_revoked_key_is_refused(db: None) -> None:
    issued = api_key_create(user=factories.user_make("erin"))
    issued.api_key.delete()
    assert _write_with_key(**{"x-api-key": issued.secret}) == (
        401, "That API key is not valid; it may have been revoked.")


def test_the_key_of_a_deactivated_user_is_refused(db: None) -> None:
    issued = api_key_create(user=factories.user_make("frank"))
    issued.api_key.user.is_active = False
    issued.api_key.user.save()
    assert _write_with_key(**{"x-api-key": issued.secret})[0] == 401


def test_a_valid_key_gets_past_authentication_to_the_body(db: None) -> None:
    issued = api_key_create(user=factories.user_make("gail"))
    assert _write_with_key(**{"x-api-key": issued.secret}) == (400, "'modelId' is required. 'layer' is required. "
                                                                    "'index' is required. 'description' is required.")
