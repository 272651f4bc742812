"""A throwaway, migrated database for a benchmark: on DATABASE_URL's server, else the embedded Postgres."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]


def _server_urls(name: str) -> tuple[str, str]:
    """(a URL to connect to for CREATE/DROP DATABASE, the scratch database's URL for Django)."""
    if url := os.environ.get("DATABASE_URL"):
        return url, urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    from atlas.embedded import postgres_start

    address = postgres_start(Path(os.environ.get("ATLAS_VAR_DIR", ROOT / "var")).resolve())
    server = f"postgres://{address.user}@{quote(address.socket_dir, safe='')}"
    return f"{server}/{address.name}", f"{server}/{name}"


def _scratch_reset(admin_url: str, name: str, create: bool) -> None:
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        if create:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


@contextmanager
def scratch_database(name: str) -> Iterator[str]:
    """A fresh, migrated database `name` that Django points at, dropped afterwards; yields its URL."""
    admin_url, url = _server_urls(name)
    _scratch_reset(admin_url, name, create=True)
    os.environ["DATABASE_URL"] = url
    # Nothing here queues a task; this keeps a web server the benchmark starts from starting an embedded Redis.
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlas.settings")
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    try:
        call_command("migrate", verbosity=0)
        yield url
    finally:
        connections.close_all()
        _scratch_reset(admin_url, name, create=False)
