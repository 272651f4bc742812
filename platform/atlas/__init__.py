"""SAE Atlas: the Django project (settings, URLs, Celery app) and one app per domain."""

from atlas.celery import app as celery_app

__all__ = ["celery_app"]
