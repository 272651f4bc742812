"""App config for language models."""

from django.apps import AppConfig


class LmsConfig(AppConfig):
    name = "atlas.lms"
    label = "lms"
    verbose_name = "Language models"
