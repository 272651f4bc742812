"""POST /api/upload: the upload form by API, with an x-api-key; every bad upload is a JSON 400 naming it."""

import html
from pathlib import Path

import pytest
from django.test import Client

from atlas.accounts.services import api_key_create
from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, Sae
from tests import factories
from tests.saes.test_upload import SPOILED_UPLOADS, _assert_nothing_stored


@pytest.fixture
def api_key(db: None) -> str:
    return api_key_create(user=factories.user_make("dora")).secret


def _upload(language_model: LanguageModel, dataset: Dataset, files: dict[str, object], key: str | None,
            **fields: object) -> tuple[int, dict[str, object]]:
    headers = {"x-api-key": key} if key else {}
    response = Client().post(
        "/api/upload", {**factories.upload_form_data(language_model, dataset, **fields), **files}, headers=headers
    )
    return response.status_code, response.json()


def test_an_upload_by_api_stores_the_sae_and_queues_its_run(
    api_key: str, language_model: LanguageModel, dataset: Dataset, sae_dir: Path
) -> None:
    status, body = _upload(language_model, dataset, factories.sae_upload_files(sae_dir), api_key)
    assert status == 201, body
    sae = Sae.objects.get()
    run = DashboardRun.objects.get(sae=sae)
    assert body == {"modelId": language_model.slug, "layer": sae.slug, "runId": run.pk,
                    "run": f"/api/runs/{run.pk}", "url": f"/{language_model.slug}/{sae.slug}/"}
    assert sae.uploaded_by is not None and sae.uploaded_by.username == "dora"


@pytest.mark.parametrize("key", [None, "atlas_not-a-key"])
def test_an_upload_without_a_valid_key_is_refused(
    key: str | None, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path
) -> None:
    status, body = _upload(language_model, dataset, factories.sae_upload_files(sae_dir), key)
    assert status == 401 and body["error"] == "unauthorized"
    _assert_nothing_stored(media_root)


def test_a_missing_field_is_named(api_key: str, language_model: LanguageModel, sae_dir: Path) -> None:
    response = Client().post("/api/upload", {"language_model": language_model.slug, **factories.sae_upload_files(
        sae_dir)}, headers={"x-api-key": api_key})
    assert response.status_code == 400
    assert response.json()["message"].startswith("dataset: This field is required.")


@pytest.mark.parametrize("case", SPOILED_UPLOADS, ids=list(SPOILED_UPLOADS))
def test_a_malformed_upload_by_api_is_named_and_leaves_nothing(
    api_key: str, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, tmp_path: Path,
    media_root: Path, case: str,
) -> None:
    spoil, expected = SPOILED_UPLOADS[case]
    files, fields = spoil(sae_dir, tmp_path)
    status, body = _upload(language_model, dataset, files, api_key, **fields)
    assert status == 400 and body["error"] == "bad_upload"
    for words in expected:
        assert html.unescape(words) in str(body["message"])
    _assert_nothing_stored(media_root)
    assert not Path("PWNED").exists()


def test_the_account_page_says_its_keys_also_upload(logged_in_client: Client) -> None:
    page = logged_in_client.get("/account/").content.decode()
    assert "<code>POST /api/upload</code>" in page and "x-api-key" in page


def test_files_and_an_archive_together_are_refused_naming_the_fields(
    api_key: str, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, tmp_path: Path, media_root: Path
) -> None:
    files, _ = SPOILED_UPLOADS["files and an archive"][0](sae_dir, tmp_path)
    status, body = _upload(language_model, dataset, files, api_key)
    assert (status, body["error"]) == (400, "bad_upload")
    assert str(body["message"]).startswith("archive: Send either cfg.json and the weights (cfg_file, weights_file)")
    _assert_nothing_stored(media_root)
