"""App config for vectors: steering vectors and probes people store, addressed and steered like features."""

from django.apps import AppConfig


class VectorsConfig(AppConfig):
    name = "atlas.vectors"
    default_auto_field = "django.db.models.BigAutoField"
