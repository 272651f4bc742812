"""The upload form: a good SAE is stored and queued; each malformed upload gets its message and leaves nothing."""

import io
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
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
    from django.core.files.uploadedfile import SimpleUploadedFile

    archive = SimpleUploadedFile(f"my_sae{suffix}", buffer.getvalue())
    status, _ = _post(logged_in_client, language_model, dataset, {"archive": archive}, slug="zipped")
    assert status == 302
    assert Sae.objects.get().slug == "zipped"


def test_wrong_shapes_are_named(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path
) -> None:
    _rewrite_weights(sae_dir, lambda weights: {**weights, "W_dec": weights["W_dec"][:40]})
    status, page = _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))
    assert status == 200
    assert "W_dec" in page and "[40," in page
    _assert_nothing_stored(media_root)


def test_wrong_tensor_names_are_named(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path
) -> None:
    def rename(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights["W_encoder"] = weights.pop("W_enc")
        return weights

    _rewrite_weights(sae_dir, rename)
    status, page = _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))
    assert status == 200
    assert "W_encoder" in page and "W_enc" in page
    _assert_nothing_stored(media_root)


def test_truncated_weights_are_refused(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path
) -> None:
    weights = sae_dir / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    status, page = _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))
    assert status == 200
    assert "truncated" in page
    _assert_nothing_stored(media_root)


def test_non_safetensors_file_is_refused(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path
) -> None:
    (sae_dir / "sae_weights.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not a safetensors file" * 10)
    status, page = _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))
    assert status == 200
    assert "not a safetensors file" in page
    _assert_nothing_stored(media_root)


def test_width_mismatch_names_hook_and_width(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, tmp_path: Path, media_root: Path
) -> None:
    d_model = language_model.d_model
    sae_dir = factories.sae_lens_write(tmp_path / "wide", d_in=d_model + 8, d_sae=32)
    status, page = _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))
    assert status == 200
    assert f"W_enc is [{d_model + 8}, 32] but the model&#x27;s {factories.TINY_HOOK} has width {d_model}" in page
    _assert_nothing_stored(media_root)


def test_unknown_hook_is_named(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path
) -> None:
    status, page = _post(
        logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir), hook_name="blocks.9.hook_nope"
    )
    assert status == 200
    assert "has no hook named &#x27;blocks.9.hook_nope&#x27;" in page
    _assert_nothing_stored(media_root)


def test_broken_cfg_json_is_refused(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path
) -> None:
    (sae_dir / "cfg.json").write_text("{not json")
    status, page = _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))
    assert status == 200
    assert "cfg.json is not valid JSON" in page
    _assert_nothing_stored(media_root)


def test_archive_with_parent_path_is_refused(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path
) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.write(sae_dir / "cfg.json", "../../cfg.json")
    archive = SimpleUploadedFile("evil.zip", buffer.getvalue())
    status, page = _post(logged_in_client, language_model, dataset, {"archive": archive})
    assert status == 200
    assert "unsafe path" in page
    _assert_nothing_stored(media_root)


def test_missing_files_say_what_to_upload(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, media_root: Path
) -> None:
    status, page = _post(logged_in_client, language_model, dataset, {})
    assert status == 200
    assert "Upload cfg.json and sae_weights.safetensors" in page
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
