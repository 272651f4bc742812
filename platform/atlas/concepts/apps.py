"""App config for concepts: from example texts to the features (and probes) that separate them, and the detectors
saved from them."""

from django.apps import AppConfig


class ConceptsConfig(AppConfig):
    name = "atlas.concepts"
    default_auto_field = "django.db.models.BigAutoField"
