"""The upload form: a good SAE is stored and queued; each malformed upload gets its message and leaves nothing."""

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from safetensors.torch import load_file, save_file

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, Sae
from tests import factories


def _post(client: Client, language_model: LanguageModel, dataset: Dataset, files: dict[str, object],
          **fields: object) -> tuple[int, str]:
    response = client.post("/upload/", {**factories.upload_form_data(language_model, dataset, **fields), **files})
    return response.status_code, response.content.decode()


def _assert_nothing_stored(media_root: Path) -> None:
    assert Sae.objects.count() == 0
    assert DashboardRun.objects.count() == 0
    leftovers = [path for path in media_root.rglob("*") if path.is_file() and "datasets" not in path.parts]
    assert leftovers == []


def _rewrite_weights(sae_dir: Path, change: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
    path = sae_dir / "sae_weights.safetensors"
    save_file(change(load_file(str(path))), str(path))


def test_upload_requires_login(db: None) -> None:
    response = Client().get("/upload/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_good_upload_stores_sae_and_queues_run(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path
) -> None:
    response = logged_in_client.post(
        "/upload/", {**factories.upload_form_data(language_model, dataset), **factories.sae_upload_files(sae_dir)}
    )
    sae = Sae.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/{language_model.slug}/{sae.slug}/"
    assert sae.hook_name == factories.TINY_HOOK  # defaulted from cfg.json's metadata
    assert (sae.slug, sae.layer, sae.d_sae, sae.architecture) == ("0-res-48", 0, 48, "standard")
    assert sorted(path.name for path in sae.files_path.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    run = DashboardRun.objects.get(sae=sae)
    assert (run.status, run.n_sequences, run.tokens_total) == ("queued", 12, 12 * 48)
    assert not (media_root / "staging").exists() or not any((media_root / "staging").iterdir())


@pytest.mark.parametrize("suffix", [".zip", ".tar.gz"])
def test_archive_upload_is_accepted(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, suffix: str
) -> None:
    buffer = io.BytesIO()
    if suffix == ".zip":
        with zipfile.ZipFile(buffer, "w") as bundle:
            for path in sae_dir.iterdir():
                bundle.write(path, f"my_sae/{path.name}")
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
            for path in sae_dir.iterdir():
                bundle.add(path, f"my_sae/{path.name}")
    archive = SimpleUploadedFile(f"my_sae{suffix}", buffer.getvalue())
    status, _ = _post(logged_in_client, language_model, dataset, {"archive": archive}, slug="zipped")
    assert status == 302
    assert Sae.objects.get().slug == "zipped"


# Each case spoils a good SAE directory in one way and returns the upload's files and other form fields.
Upload = tuple[dict[str, object], dict[str, object]]


def _wrong_shapes(sae_dir: Path, tmp_path: Path) -> Upload:
    _rewrite_weights(sae_dir, lambda weights: {**weights, "W_dec": weights["W_dec"][:40]})
    return factories.sae_upload_files(sae_dir), {}


def _wrong_tensor_names(sae_dir: Path, tmp_path: Path) -> Upload:
    def rename(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights["W_encoder"] = weights.pop("W_enc")
        return weights

    _rewrite_weights(sae_dir, rename)
    return factories.sae_upload_files(sae_dir), {}


def _truncated(sae_dir: Path, tmp_path: Path) -> Upload:
    weights = sae_dir / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    return factories.sae_upload_files(sae_dir), {}


def _not_safetensors(sae_dir: Path, tmp_path: Path) -> Upload:
    (sae_dir / "sae_weights.safetensors").write_bytes(b"PK\x03\x04 a zip, not safetensors" * 10)
    return factories.sae_upload_files(sae_dir), {}


def _d_in_mismatch(sae_dir: Path, tmp_path: Path) -> Upload:
    return factories.sae_upload_files(factories.sae_lens_write(tmp_path / "wide", d_in=72, d_sae=32)), {}


def _unknown_hook(sae_dir: Path, tmp_path: Path) -> Upload:
    return factories.sae_upload_files(sae_dir), {"hook_name": "blocks.9.hook_nope"}


def _broken_cfg(sae_dir: Path, tmp_path: Path) -> Upload:
    (sae_dir / "cfg.json").write_text("{not json")
    return factories.sae_upload_files(sae_dir), {}


def _archive_escaping_its_directory(sae_dir: Path, tmp_path: Path) -> Upload:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.write(sae_dir / "cfg.json", "../../cfg.json")
    return {"archive": SimpleUploadedFile("evil.zip", buffer.getvalue())}, {}


def _no_files(sae_dir: Path, tmp_path: Path) -> Upload:
    return {}, {}


SPOILED_UPLOADS: dict[str, tuple[Callable[[Path, Path], Upload], list[str]]] = {
    "wrong shapes": (_wrong_shapes, ["W_dec", "[40,"]),
    "wrong tensor names": (_wrong_tensor_names, ["W_encoder", "W_enc"]),
    "truncated file": (_truncated, ["truncated"]),
    "not safetensors": (_not_safetensors, ["not a safetensors file"]),
    # The tiny model's d_model is 64 (asserted in the test).
    "d_in mismatch": (_d_in_mismatch, ["W_enc is [72, 32] but the model&#x27;s blocks.0.hook_resid_post has width 64"]),
    "unknown hook": (_unknown_hook, ["has no hook named &#x27;blocks.9.hook_nope&#x27;"]),
    "broken cfg.json": (_broken_cfg, ["cfg.json is not valid JSON"]),
    "archive escaping its directory": (_archive_escaping_its_directory, ["unsafe path"]),
    "no files": (_no_files, ["Upload cfg.json and sae_weights.safetensors"]),
}


@pytest.mark.parametrize("case", SPOILED_UPLOADS, ids=list(SPOILED_UPLOADS))
def test_malformed_upload_is_named_and_leaves_nothing(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, tmp_path: Path,
    media_root: Path, case: str,
) -> None:
    assert language_model.d_model == 64
    spoil, expected = SPOILED_UPLOADS[case]
    files, fields = spoil(sae_dir, tmp_path)
    status, page = _post(logged_in_client, language_model, dataset, files, **fields)
    assert status == 200
    for words in expected:
        assert words in page
    _assert_nothing_stored(media_root)


def test_duplicate_sae_id_is_refused(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path
) -> None:
    assert _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))[0] == 302
    status, page = _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))
    assert status == 200
    assert "already has an SAE &#x27;0-res-48&#x27;" in page
    assert Sae.objects.count() == 1


def test_upload_page_suggests_the_models_hooks(logged_in_client: Client, language_model: LanguageModel) -> None:
    page = logged_in_client.get("/upload/").content.decode()
    assert 'list="hook-names"' in page
    assert '<option value="blocks.0.hook_resid_post">' in page
    assert page.index("blocks.0.hook_resid_post") < page.index("blocks.1.hook_resid_post")


def test_an_id_taken_during_the_upload_is_refused_cleanly(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))[0] == 302
    files_before = sorted(media_root.rglob("*"))
    # As if a concurrent upload took the id after this one checked it: only the unique constraint stops it.
    monkeypatch.setattr("django.db.models.query.QuerySet.exists", lambda self: False)
    status, page = _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))
    assert status == 200
    assert "already has an SAE &#x27;0-res-48&#x27;" in page
    assert Sae.objects.count() == 1
    assert sorted(media_root.rglob("*")) == files_before
