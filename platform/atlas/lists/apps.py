"""App config for lists: named lists of features from any SAEs, each with a note, kept by their owner."""

from django.apps import AppConfig


class ListsConfig(AppConfig):
    name = "atlas.lists"
    default_auto_field = "django.db.models.BigAutoField"
