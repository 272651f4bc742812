"""Settings: strict typed helpers that name the variable they refuse, and an import that starts nothing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from atlas.settings import envbool, envfloat, envint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("On", True), ("1", True), ("no", False),
                                                 ("FALSE", False), ("0", False), (" ", True), ("", True)])
def test_envbool_reads_the_usual_spellings_and_a_blank_as_the_default(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    monkeypatch.setenv("ATLAS_TEST_FLAG", value)
    assert envbool("ATLAS_TEST_FLAG", True) is expected


def test_envbool_refuses_a_misspelling_with_the_variables_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLAS_TEST_FLAG", "ture")
    with pytest.raises(ImproperlyConfigured, match="ATLAS_TEST_FLAG='ture' is not a boolean"):
        envbool("ATLAS_TEST_FLAG", False)


def test_envint_and_envfloat_parse_or_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATLAS_TEST_NUMBER", "2.5")
    assert envfloat("ATLAS_TEST_NUMBER", 1.0) == 2.5
    with pytest.raises(ImproperlyConfigured, match=re.escape("ATLAS_TEST_NUMBER='2.5' is not a whole number")):
        envint("ATLAS_TEST_NUMBER", 1)
    monkeypatch.setenv("ATLAS_TEST_NUMBER", "fast")
    with pytest.raises(ImproperlyConfigured, match="ATLAS_TEST_NUMBER='fast' is not a number"):
        envfloat("ATLAS_TEST_NUMBER", 1.0)
    monkeypatch.delenv("ATLAS_TEST_NUMBER")
    assert envint("ATLAS_TEST_NUMBER", 7) == 7


def _fresh_environment(var_dir: Path) -> dict[str, str]:
    unset = {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ATLAS_MEDIA_ROOT"}
    environment = {name: value for name, value in os.environ.items() if name not in unset}
    return {**environment, "ATLAS_VAR_DIR": str(var_dir), "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"}


def test_importing_settings_starts_and_writes_nothing(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    code = "import atlas.settings as s; print(s.ATLAS_EMBEDDED_POSTGRES, s.ATLAS_EMBEDDED_REDIS, repr(s.SECRET_KEY))"
    result = subprocess.run([sys.executable, "-c", code], env=_fresh_environment(var_dir), capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.split() == ["True", "True", "''"]
    assert not var_dir.exists()


def test_a_bad_value_stops_start_up_naming_the_variable(tmp_path: Path) -> None:
    environment = {**_fresh_environment(tmp_path / "var"), "ATLAS_DB_PREPARE": "sometimes"}
    result = subprocess.run([sys.executable, "-c", "import atlas.settings"], env=environment, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "ATLAS_DB_PREPARE='sometimes' is not a boolean" in result.stderr
