"""Real Celery worker processes on their own queues, against the test database and a test's media root."""

import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from django.db import connection

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 120
# Short enough for a test to see a dead worker's shard recovered, long enough that a busy machine never makes a
# live worker look dead.
HEARTBEAT_SECONDS, STALE_SECONDS = 0.5, 5.0


def _test_database_url() -> str:
    database = connection.settings_dict
    host = quote(database["HOST"] or "localhost", safe="")
    port = f":{database['PORT']}" if database["PORT"] else ""
    credentials = quote(database["USER"] or "", safe="")
    if database["PASSWORD"]:
        credentials += ":" + quote(database["PASSWORD"], safe="")
    return f"postgres://{credentials}@{host}{port}/{database['NAME']}"


@dataclass
class Worker:
    process: subprocess.Popen[str]
    name: str  # as `-n` gave it: "<queue>-<n>@%h"
    log: list[str] = field(default_factory=list)


def _wait_until_ready(worker: Worker) -> None:
    ready = threading.Event()

    def read() -> None:
        assert worker.process.stdout is not None
        for line in worker.process.stdout:
            worker.log.append(line)
            if " ready." in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(READY_TIMEOUT_SECONDS):
        worker.process.kill()
        raise RuntimeError("The Celery worker did not start:\n" + "".join(worker.log[-40:]))


class Workers:
    """Starts `celery -A atlas worker` processes on this test's own run and live queues, as `make worker` does
    (both queues) or `make live-worker` (the live one alone); each is a separate OS process."""

    def __init__(self, queue: str, media_root: Path) -> None:
        self.queue, self.live_queue = queue, f"{queue}-live"
        self.env = {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
            "DATABASE_URL": _test_database_url(),
            "ATLAS_MEDIA_ROOT": str(media_root),
            "ATLAS_GPU_QUEUE": queue,
            "ATLAS_LIVE_QUEUE": self.live_queue,
            "ATLAS_RUN_PROGRESS_SECONDS": "0",
            "ATLAS_TASK_RETRY_SECONDS": "0.2",
            # A dead worker's step is recovered within seconds, not the default minutes; the broker's visibility
            # timeout stays at its default of hours, so only the recovery sweep can hand the step out again.
            "ATLAS_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "ATLAS_SHARD_STALE_SECONDS": str(STALE_SECONDS),
            "ATLAS_RECOVERY_SECONDS": str(HEARTBEAT_SECONDS),
        }
        self.started: list[Worker] = []

    def start(self, *, batch_sleep: float = 0.0, merge_sleep: float = 0.0, live_only: bool = False) -> Worker:
        """A worker; batch_sleep slows its model pass, merge_sleep the start of its merges, so a test can catch it
        mid-shard or mid-merge (see slow_worker.py).

        live_only: serve live activations only, like `make live-worker`.
        """
        env = {**self.env, "ATLAS_TEST_BATCH_SLEEP": str(batch_sleep), "ATLAS_TEST_MERGE_SLEEP": str(merge_sleep)}
        name = f"{self.queue}-{len(self.started)}@%h"
        queues = self.live_queue if live_only else f"{self.queue},{self.live_queue}"
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.slow_worker", "-A", "atlas", "worker", "-Q", queues,
             "--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "-n", name],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        worker = Worker(process, name)
        self.started.append(worker)
        _wait_until_ready(worker)
        return worker

    def logs(self) -> str:
        return "".join(line for worker in self.started for line in worker.log[-30:])

    def stop_all(self) -> None:
        for worker in self.started:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.started:
            try:
                worker.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
