"""Reads of API keys: a user's keys for the account page, and the user a presented key belongs to."""

from django.contrib.auth.models import User
from django.db.models import QuerySet
from django.utils import timezone

from atlas.accounts.models import ApiKey
from atlas.accounts.services import api_key_digest


def api_keys_of(user: User) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(user=user)


def api_key_user(secret: str) -> User | None:
    """The active user holding this key, or None; records when the key was last used."""
    api_key = ApiKey.objects.select_related("user").filter(digest=api_key_digest(secret)).first()
    if api_key is None or not api_key.user.is_active:
        return None
    ApiKey.objects.filter(pk=api_key.pk).update(last_used=timezone.now())
    return api_key.user
