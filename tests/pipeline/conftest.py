"""A real Celery worker process on its own queue, against the test database and this test's media root."""

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 120


def _test_database_url() -> str:
    database = connection.settings_dict
    host = quote(database["HOST"] or "localhost", safe="")
    port = f":{database['PORT']}" if database["PORT"] else ""
    credentials = quote(database["USER"] or "", safe="")
    if database["PASSWORD"]:
        credentials += ":" + quote(database["PASSWORD"], safe="")
    return f"postgres://{credentials}@{host}{port}/{database['NAME']}"


def _wait_until_ready(process: subprocess.Popen[str], log: list[str]) -> None:
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            log.append(line)
            if " ready." in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(READY_TIMEOUT_SECONDS):
        process.kill()
        raise RuntimeError("The Celery worker did not start:\n" + "".join(log[-40:]))


@pytest.fixture
def celery_worker(transactional_db: None, settings: Any, media_root: Path) -> Iterator[list[str]]:
    """Start `celery -A atlas worker` as a separate process; yields its log lines."""
    queue = f"gpu-test-{uuid.uuid4().hex[:8]}"
    settings.ATLAS_GPU_QUEUE = queue
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
        "DATABASE_URL": _test_database_url(),
        "ATLAS_MEDIA_ROOT": str(media_root),
        "ATLAS_GPU_QUEUE": queue,
        "ATLAS_RUN_PROGRESS_SECONDS": "0",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "atlas", "worker", "-Q", queue, "--pool", "solo",
         "--loglevel", "INFO", "--without-gossip", "--without-mingle", "-n", f"{queue}@%h"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    log: list[str] = []
    _wait_until_ready(process, log)
    yield log
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    # Close the test's own connection so the test database can be flushed without waiting on it.
    connection.close()
