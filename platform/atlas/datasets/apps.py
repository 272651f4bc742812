"""App config for datasets."""

from django.apps import AppConfig


class DatasetsConfig(AppConfig):
    name = "atlas.datasets"
    label = "datasets"
