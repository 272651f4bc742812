"""Shared fixtures: isolated media storage, the tiny model's records, a logged-in client, a published feature,
real worker processes."""

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from atlas.datasets.models import Dataset
from atlas.embedded import local_prepare
from atlas.features.models import Feature
from atlas.lms.models import LanguageModel
from tests import factories
from tests.support.workers import Workers

# The test run is an entry point like manage.py: it starts the embedded Postgres and Redis when the URLs are unset.
local_prepare()


@pytest.fixture(autouse=True)
def media_root(settings: Any, tmp_path: Path) -> Path:
    """Every test stores uploads in its own directory, so 'no files left behind' can be checked."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return Path(settings.MEDIA_ROOT)


@pytest.fixture
def language_model(db: None) -> LanguageModel:
    return factories.language_model_make()


@pytest.fixture
def dataset(language_model: LanguageModel) -> Dataset:
    return factories.dataset_make(language_model)


@pytest.fixture
def logged_in_client(db: None) -> Client:
    client = Client()
    client.force_login(factories.user_make())
    return client


@pytest.fixture
def sae_dir(tmp_path: Path) -> Path:
    return factories.sae_lens_write(tmp_path / "sae", d_in=factories.tiny_model_facts().d_model)


@pytest.fixture
def published_feature(language_model: LanguageModel, dataset: Dataset) -> Feature:
    """factories.published_feature_make's feature 3 of SAE 0-res-8, with known numbers."""
    return factories.published_feature_make(language_model, dataset)


@pytest.fixture
def workers(transactional_db: None, settings: Any, media_root: Path) -> Iterator[Workers]:
    """Starts real worker processes on demand, on queues of this test's own; stops them after it."""
    queue = f"gpu-test-{uuid.uuid4().hex[:8]}"
    started = Workers(queue, media_root)
    settings.ATLAS_GPU_QUEUE, settings.ATLAS_LIVE_QUEUE = started.queue, started.live_queue
    yield started
    started.stop_all()
    # Close the test's own connection so the test database can be flushed without waiting on it.
    connection.close()
