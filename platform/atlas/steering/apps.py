"""App config for steering: DEFAULT and STEERED completions with features and vectors, each stored once by its
request's hash and reopened at /steer/<id>."""

from django.apps import AppConfig


class SteeringConfig(AppConfig):
    name = "atlas.steering"
    default_auto_field = "django.db.models.BigAutoField"
