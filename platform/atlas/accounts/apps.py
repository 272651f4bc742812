"""App config for accounts: API keys."""

from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "atlas.accounts"
    default_auto_field = "django.db.models.BigAutoField"
