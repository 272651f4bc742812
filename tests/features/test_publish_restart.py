"""Postgres restarting in the middle of a run's COPY: nothing of the run shows, and publishing it again completes.

A separate process publishes into a private Postgres; the test catches its COPY in flight, restarts the
server with `pg_ctl restart -m immediate` (a crash, then WAL recovery), and looks at what survived.
"""

import json
import os
import signal
import subprocess
import time
from typing import Any

import psycopg

from tests.support.private_postgres import PrivatePostgres

N_PUBLISHED, N_FEATURES = 512, 8192
COPY_WAIT_SECONDS = 60


def _copy_running(database: psycopg.Connection[Any]) -> bool:
    row = database.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY %'"
    ).fetchone()
    return row is not None and row[0] > 0


def _wait_for_copy(postgres: PrivatePostgres, database: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + COPY_WAIT_SECONDS
    with psycopg.connect(postgres.url(database), autocommit=True) as watcher:
        while not _copy_running(watcher):
            if process.poll() is not None:
                raise AssertionError(f"the publish ended before its COPY was seen:\n{process.communicate()[1]}")
            assert time.monotonic() < deadline, f"no COPY within {COPY_WAIT_SECONDS} s"
            time.sleep(0.002)


def _state(postgres: PrivatePostgres, database: str, pending: int) -> dict[str, Any]:
    with psycopg.connect(postgres.url(database)) as db:
        counts = dict(db.execute("SELECT run_id, count(DISTINCT index) FROM features_feature GROUP BY run_id"))
        published = db.execute("SELECT published_run_id FROM saes_sae").fetchone()
        status = db.execute("SELECT status FROM saes_dashboardrun WHERE id = %s", [pending]).fetchone()
        rows = db.execute("SELECT count(*) FROM features_feature").fetchone()
    assert published is not None and status is not None and rows is not None
    return {"counts": counts, "published": published[0], "pending_status": status[0], "rows": rows[0]}


def test_a_restart_mid_copy_shows_nothing_partial_and_the_retry_completes(
    private_postgres: PrivatePostgres, settings: Any
) -> None:
    database = "restart_mid_copy"
    private_postgres.database_create(database)
    ids = json.loads(private_postgres.ingest_process_run(database, settings.REDIS_URL, "setup", str(N_PUBLISHED)))
    published, pending = ids["published"], ids["pending"]

    process = private_postgres.ingest_process(database, settings.REDIS_URL, "publish", str(pending), str(N_FEATURES))
    _wait_for_copy(private_postgres, database, process)
    # Frozen, the client can neither finish the COPY nor commit: the restart is sure to land inside it.
    os.kill(process.pid, signal.SIGSTOP)
    try:
        private_postgres.restart_immediately()
    finally:
        os.kill(process.pid, signal.SIGCONT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "OperationalError" in stderr, stderr

    after_crash = _state(private_postgres, database, pending)
    assert after_crash == {"counts": {published: N_PUBLISHED}, "published": published, "pending_status": "queued",
                           "rows": N_PUBLISHED}

    private_postgres.ingest_process_run(database, settings.REDIS_URL, "publish", str(pending), str(N_FEATURES))
    after_retry = _state(private_postgres, database, pending)
    assert after_retry == {"counts": {pending: N_FEATURES}, "published": pending, "pending_status": "succeeded",
                           "rows": N_FEATURES}
