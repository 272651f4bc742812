"""Uploads never block reads: their checks run in a separate, niced process, a file over the limit stops being
written as it arrives, large files are moved rather than copied, and gunicorn serves from threads everywhere.

This module is imported by the check process too (for _check_that_dies), which has no Django set up: models and
factories are imported inside the tests.
"""

import io
import os
import re
import shlex
import stat
import zipfile
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile
from django.test import Client

from atlas.saes import upload_checks
from atlas.saes.upload_handlers import CappedTemporaryFileUploadHandler

ROOT = Path(__file__).resolve().parents[2]


def _check_that_dies(staging: Path, archive: object) -> NoReturn:
    os._exit(1)  # as a check process killed for memory


def _post(client: Client, language_model: Any, dataset: Any, files: dict[str, object], **fields: object) -> str:
    from tests import factories

    response = client.post("/upload/", {**factories.upload_form_data(language_model, dataset, **fields), **files})
    return str(response.status_code)


def _staged(media_root: Path) -> list[Path]:
    staging = media_root / "staging"
    return list(staging.rglob("*")) if staging.exists() else []


def test_checks_run_in_a_separate_process_at_a_lower_priority(db: None) -> None:
    pool = upload_checks._pool_get()
    assert pool.submit(os.getpid).result() != os.getpid()
    assert pool.submit(os.nice, 0).result() == os.nice(0) + upload_checks.CHECK_NICENESS


def test_a_check_whose_process_dies_is_refused_and_the_next_upload_is_checked(
    logged_in_client: Client, language_model: Any, dataset: Any, sae_dir: Path, media_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from atlas.saes.models import Sae
    from tests import factories

    monkeypatch.setattr(upload_checks, "sae_files_unpack_and_check", _check_that_dies)
    response = logged_in_client.post(
        "/upload/", {**factories.upload_form_data(language_model, dataset), **factories.sae_upload_files(sae_dir)}
    )
    assert response.status_code == 200
    assert "The check of the files stopped before it finished" in response.content.decode()
    assert not Sae.objects.exists() and _staged(media_root) == []
    monkeypatch.undo()
    assert _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir)) == "302"
    assert Sae.objects.count() == 1


def test_a_check_process_that_died_between_uploads_is_replaced(
    logged_in_client: Client, language_model: Any, dataset: Any, sae_dir: Path
) -> None:
    from atlas.saes.models import Sae
    from tests import factories

    with pytest.raises(upload_checks.BrokenProcessPool):
        upload_checks._pool_get().submit(os._exit, 1).result()
    assert _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir)) == "302"
    assert Sae.objects.count() == 1


def test_an_archive_over_the_limit_stops_while_it_unpacks_through_the_api(
    language_model: Any, dataset: Any, sae_dir: Path, media_root: Path, settings: Any
) -> None:
    from atlas.accounts.services import api_key_create
    from atlas.saes.models import DashboardRun, Sae
    from tests import factories

    settings.ATLAS_MAX_UPLOAD_BYTES = 1_000_000
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.write(sae_dir / "cfg.json", "sae/cfg.json")
        bundle.writestr("sae/sae_weights.safetensors", b"\0" * 200_000_000)
    assert len(buffer.getvalue()) < 1_000_000  # the upload itself is under the limit; what it unpacks to is not
    key = api_key_create(user=factories.user_make("dora")).secret
    response = Client().post(
        "/api/upload",
        {**factories.upload_form_data(language_model, dataset), "archive": SimpleUploadedFile("bomb.zip",
                                                                                             buffer.getvalue())},
        headers={"x-api-key": key},
    )
    assert response.status_code == 400
    assert response.json() == {
        "error": "bad_upload",
        "message": "archive: bomb.zip unpacks to more than the 1,000,000 byte upload limit; upload the files "
                   "themselves or raise ATLAS_MAX_UPLOAD_BYTES.",
    }
    assert _staged(media_root) == []
    assert not Sae.objects.exists() and not DashboardRun.objects.exists()


def test_a_file_over_the_limit_stops_being_written_but_keeps_its_size(settings: Any) -> None:
    settings.ATLAS_MAX_UPLOAD_BYTES = 300_000
    handler = CappedTemporaryFileUploadHandler()
    handler.new_file("weights_file", "w.safetensors", "application/octet-stream", None)
    chunk, sent = b"x" * 65_536, 0
    for _ in range(20):
        handler.receive_data_chunk(chunk, sent)
        sent += len(chunk)
    upload = handler.file_complete(sent)
    assert upload is not None and upload.size == sent
    assert os.path.getsize(upload.temporary_file_path()) <= settings.ATLAS_MAX_UPLOAD_BYTES
    upload.close()


def test_a_file_sent_past_the_limit_is_refused_as_too_large(
    logged_in_client: Client, language_model: Any, dataset: Any, sae_dir: Path, media_root: Path, settings: Any
) -> None:
    from tests import factories

    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0  # every file goes through the temporary-file handler
    settings.ATLAS_MAX_UPLOAD_BYTES = (sae_dir / "sae_weights.safetensors").stat().st_size - 1
    response = logged_in_client.post(
        "/upload/", {**factories.upload_form_data(language_model, dataset), **factories.sae_upload_files(sae_dir)}
    )
    assert re.search(r"sae_weights.safetensors is [0-9,]+ bytes or more, over the", response.content.decode())
    assert _staged(media_root) == []


def _not_copied(*args: object) -> NoReturn:
    raise AssertionError("a temporary upload file was copied chunk by chunk, not moved")


def test_large_files_are_moved_into_storage_readable_by_the_workers(
    logged_in_client: Client, language_model: Any, dataset: Any, sae_dir: Path, settings: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from atlas.saes.models import Sae
    from tests import factories

    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 0
    monkeypatch.setattr(TemporaryUploadedFile, "chunks", _not_copied)
    assert _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir)) == "302"
    stored = Sae.objects.get().files_path
    for name in ("cfg.json", "sae_weights.safetensors"):
        assert (stored / name).read_bytes() == (sae_dir / name).read_bytes()
        assert stat.S_IMODE((stored / name).stat().st_mode) == 0o644


def _gunicorn_arguments() -> dict[str, list[str]]:
    """Each place that starts gunicorn, and the arguments it passes."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    makefile = (ROOT / "Makefile").read_text()
    demo = (ROOT / "platform/atlas/saes/management/commands/atlas_demo.py").read_text()
    bench = (ROOT / "bench/api.py").read_text()
    return {
        "docker-compose web": shlex.split(compose["services"]["web"]["command"][-1].split("exec ", 1)[1]),
        "make web": shlex.split(re.search(r"^web:.*\n\t(.*)$", makefile, re.MULTILINE).group(1)),  # type: ignore[union-attr]
        "make demo": re.findall(r'"([^"]+)"', demo[demo.index('"atlas.wsgi"'):demo.index("cwd=settings.BASE_DIR")]),
        "make bench-api": re.findall(r'"([^"]+)"', bench[bench.index('"atlas.wsgi"'):bench.index("server = ")]),
    }


@pytest.mark.parametrize("where", ["docker-compose web", "make web", "make demo", "make bench-api"])
def test_gunicorn_serves_from_threads_so_an_upload_holds_a_thread_not_a_process(where: str) -> None:
    arguments = _gunicorn_arguments()[where]
    assert "atlas.wsgi" in arguments
    assert arguments[arguments.index("--worker-class") + 1] == "gthread"
    assert int(arguments[arguments.index("--threads") + 1]) >= 4
