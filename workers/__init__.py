"""Celery tasks (thin shells over services) and the pure compute package."""
