"""App config for SAEs."""

from django.apps import AppConfig


class SaesConfig(AppConfig):
    name = "atlas.saes"
    label = "saes"
    verbose_name = "SAEs"
