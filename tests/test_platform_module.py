"""platform/ is a source root, so `import platform` must still be the standard library everywhere."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pytest_sees_the_stdlib_platform() -> None:
    assert platform.system() == os.uname().sysname
    assert not (ROOT / "platform" / "__init__.py").exists()


@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "manage.py", "shell", "-c", "import platform; print(platform.system())"],
        [sys.executable, "-c", "import atlas.celery, workers.tasks, platform; print(platform.system())"],
        [sys.executable, "-c", "import atlas.wsgi, platform; print(platform.system())"],
    ],
    ids=["manage.py", "celery", "wsgi"],
)
def test_entry_points_see_the_stdlib_platform(command: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == platform.system()
