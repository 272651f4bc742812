"""App config for feature dashboards."""

from django.apps import AppConfig


class FeaturesConfig(AppConfig):
    name = "atlas.features"
    label = "features"
