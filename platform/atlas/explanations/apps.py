"""App config for explanations: people's labels for features."""

from django.apps import AppConfig


class ExplanationsConfig(AppConfig):
    name = "atlas.explanations"
    default_auto_field = "django.db.models.BigAutoField"
