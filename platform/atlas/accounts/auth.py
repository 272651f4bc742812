"""Who is asking: a logged-in person on the pages, the holder of an API key (x-api-key header) on API writes."""

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja.errors import AuthenticationError
from ninja.security import APIKeyHeader

from atlas.accounts.selectors import api_key_user

API_KEY_HEADER = "x-api-key"


class LoggedInRequest(HttpRequest):
    """A page request behind login_required, whose user is therefore a real one (never AnonymousUser)."""

    user: User


class ApiKeyRequest(HttpRequest):
    """An API request that ApiKeyAuth let through: ninja puts the key's user in `auth`."""

    auth: User


class ApiKeyAuth(APIKeyHeader):
    """Writes need the key of an active user; the 401 says whether the key is missing or not valid."""

    param_name = API_KEY_HEADER

    def authenticate(self, request: HttpRequest, key: str | None) -> User:
        secret = (key or "").strip()
        if not secret:
            raise AuthenticationError(message=f"Send an API key in the {API_KEY_HEADER} header; make one at "
                                              "/account/.")
        user = api_key_user(secret)
        if user is None:
            raise AuthenticationError(message="That API key is not valid; it may have been revoked.")
        return user
