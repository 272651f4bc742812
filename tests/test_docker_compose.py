"""docker-compose.yml: postgres, redis, web (gunicorn), a GPU worker for runs and one for live activations."""

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_services_and_their_roles() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "web", "worker", "live"}
    assert "gunicorn atlas.wsgi" in " ".join(services["web"]["command"])
    assert services["worker"]["command"][:6] == ["celery", "-A", "atlas", "worker", "-Q", "gpu,live"]
    assert services["live"]["command"][:6] == ["celery", "-A", "atlas", "worker", "-Q", "live"]


def test_worker_reserves_a_gpu() -> None:
    devices = _compose()["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]


def test_web_and_worker_use_the_real_services() -> None:
    services = _compose()["services"]
    for name in ("web", "worker", "live"):
        environment = services[name]["environment"]
        assert environment["DATABASE_URL"].startswith("postgres://") and "@postgres:" in environment["DATABASE_URL"]
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["build"]["context"] == "."


def test_the_web_image_is_the_one_without_torch() -> None:
    services = _compose()["services"]
    assert services["web"]["build"]["target"] == "web"
    assert {services[name]["build"]["target"] for name in ("worker", "live")} == {"worker"}


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="Debian's docker-compose is not installed")
def test_docker_compose_accepts_the_file() -> None:
    result = subprocess.run(["docker-compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True,
                            env={**os.environ, "SECRET_KEY": "test"}, timeout=60)
    assert result.returncode == 0, result.stderr
