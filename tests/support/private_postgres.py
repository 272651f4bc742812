"""A Postgres server of the tests' own, from the pgserver wheel, that a test may crash under a running client."""

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
PROCESS_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class PrivatePostgres:
    pgdata: Path
    socket_dir: Path
    system_user: str | None  # pgserver runs the server as another user when the tests run as root

    def url(self, database: str) -> str:
        return f"postgres://postgres@{quote(str(self.socket_dir), safe='')}/{database}"

    def database_create(self, name: str) -> None:
        with psycopg.connect(self.url("postgres"), autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def restart_immediately(self) -> None:
        """`pg_ctl restart -m immediate`: every backend dies as in a crash, then the server recovers from WAL."""
        import pgserver

        pgserver.pg_ctl(["-w", "-m", "immediate", "restart"], pgdata=self.pgdata, user=self.system_user)

    def stop(self) -> None:
        """Stop the server whatever its process is now (pgserver only knows the one it started)."""
        import pgserver

        pgserver.pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=self.pgdata, user=self.system_user)

    def process_env(self, database: str, redis_url: str) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
            "DJANGO_SETTINGS_MODULE": "atlas.settings",
            "DATABASE_URL": self.url(database),
            "REDIS_URL": redis_url,
        }

    def ingest_process(self, database: str, redis_url: str, *arguments: str) -> subprocess.Popen[str]:
        """tests.support.ingest_process against one of this server's databases."""
        return subprocess.Popen(
            [sys.executable, "-m", "tests.support.ingest_process", *arguments], cwd=ROOT,
            env=self.process_env(database, redis_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def ingest_process_run(self, database: str, redis_url: str, *arguments: str) -> str:
        """Run it to the end; its stdout, or an AssertionError with its stderr."""
        process = self.ingest_process(database, redis_url, *arguments)
        stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT_SECONDS)
        assert process.returncode == 0, f"ingest_process {' '.join(arguments)} failed:\n{stderr}"
        return stdout
