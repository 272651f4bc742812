"""Issuing and revoking API keys; the key itself is returned once and never stored."""

import hashlib
import secrets
from dataclasses import dataclass

from django.contrib.auth.models import User

from atlas.accounts.models import ApiKey

KEY_PREFIX = "atlas_"
PREFIX_SHOWN = len(KEY_PREFIX) + 6


@dataclass(frozen=True)
class IssuedKey:
    api_key: ApiKey
    secret: str


def api_key_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_key_create(*, user: User, name: str = "") -> IssuedKey:
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    api_key = ApiKey.objects.create(user=user, name=name, prefix=secret[:PREFIX_SHOWN], digest=api_key_digest(secret))
    return IssuedKey(api_key=api_key, secret=secret)


def api_key_revoke(*, user: User, key_id: int) -> bool:
    """Deletes one of the user's keys; False when the user holds no key with that id."""
    deleted, _ = ApiKey.objects.filter(user=user, pk=key_id).delete()
    return deleted > 0
