"""One real Celery worker process for the pipeline tests (the `workers` fixture, in tests/conftest.py, starts more)."""

import pytest

from tests.support.workers import Workers


@pytest.fixture
def celery_worker(workers: Workers) -> list[str]:
    """One worker; yields its log lines."""
    return workers.start().log
