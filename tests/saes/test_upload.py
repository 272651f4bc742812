"""The upload form: a good SAE is stored and queued; each malformed upload gets its message and leaves nothing."""

import builtins
import io
import json
import struct
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from safetensors.torch import load_file, save_file

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.models import DashboardRun, Sae
from tests import factories
from workers.compute.sae_files import (
    CFG_FILENAME,
    DICTIONARY_LEARNING_CONFIG_FILENAME,
    DICTIONARY_LEARNING_WEIGHTS_FILENAME,
    WEIGHTS_FILENAME,
)

# A dictionary_learning trainer folder's files, by shorter names.
AE_PT, CONFIG_JSON = DICTIONARY_LEARNING_WEIGHTS_FILENAME, DICTIONARY_LEARNING_CONFIG_FILENAME


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
    path = sae_dir / WEIGHTS_FILENAME
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
    assert sorted(path.name for path in sae.files_path.iterdir()) == [CFG_FILENAME, WEIGHTS_FILENAME]
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
    weights = sae_dir / WEIGHTS_FILENAME
    weights.write_bytes(weights.read_bytes()[:-1000])
    return factories.sae_upload_files(sae_dir), {}


def _not_safetensors(sae_dir: Path, tmp_path: Path) -> Upload:
    (sae_dir / WEIGHTS_FILENAME).write_bytes(b"PK\x03\x04 a zip, not safetensors" * 10)
    return factories.sae_upload_files(sae_dir), {}


def _d_in_mismatch(sae_dir: Path, tmp_path: Path) -> Upload:
    return factories.sae_upload_files(factories.sae_lens_write(tmp_path / "wide", d_in=72, d_sae=32)), {}


def _unknown_hook(sae_dir: Path, tmp_path: Path) -> Upload:
    return factories.sae_upload_files(sae_dir), {"hook_name": "blocks.9.hook_nope"}


def _broken_cfg(sae_dir: Path, tmp_path: Path) -> Upload:
    (sae_dir / CFG_FILENAME).write_text("{not json")
    return factories.sae_upload_files(sae_dir), {}


def _archive_escaping_its_directory(sae_dir: Path, tmp_path: Path) -> Upload:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.write(sae_dir / CFG_FILENAME, "../../cfg.json")
    return {"archive": SimpleUploadedFile("evil.zip", buffer.getvalue())}, {}


def _no_files(sae_dir: Path, tmp_path: Path) -> Upload:
    return {}, {}


def _header_longer_than_file(sae_dir: Path, tmp_path: Path) -> Upload:
    (sae_dir / WEIGHTS_FILENAME).write_bytes(struct.pack("<Q", 1_000_000) + b'{"W_enc": {')
    return factories.sae_upload_files(sae_dir), {}


def _missing_tensor(sae_dir: Path, tmp_path: Path) -> Upload:
    _rewrite_weights(sae_dir, lambda weights: {name: t for name, t in weights.items() if name != "b_dec"})
    return factories.sae_upload_files(sae_dir), {}


def _nan_weights(sae_dir: Path, tmp_path: Path) -> Upload:
    def spoil(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights["W_enc"][0, 0] = float("inf")
        weights["b_enc"][1] = float("nan")
        return weights

    _rewrite_weights(sae_dir, spoil)
    return factories.sae_upload_files(sae_dir), {}


def _nan_in_bf16_weights(sae_dir: Path, tmp_path: Path) -> Upload:
    def spoil(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        weights["W_dec"] = weights["W_dec"].bfloat16()
        weights["W_dec"][4, 2] = float("nan")
        return weights

    _rewrite_weights(sae_dir, spoil)
    return factories.sae_upload_files(sae_dir), {}


def _ae_pt_upload(state: object, tmp_path: Path, **save: Any) -> Upload:
    path = tmp_path / AE_PT
    torch.save(state, path, **save)
    config = {"trainer": {"dict_class": "AutoEncoder", "activation_dim": 64, "dict_size": 48}}
    return {
        "cfg_file": SimpleUploadedFile(CONFIG_JSON, json.dumps(config).encode()),
        "weights_file": SimpleUploadedFile(AE_PT, path.read_bytes()),
    }, {"hook_name": factories.TINY_HOOK}


def _ae_pt_state(sae_dir: Path, tmp_path: Path) -> dict[str, torch.Tensor]:
    sae = factories.dictionary_learning_make("AutoEncoder", d_in=64, d_sae=48)
    return {name: tensor.detach() for name, tensor in sae.state_dict().items()}


def _ae_pt_with_an_inf(sae_dir: Path, tmp_path: Path) -> Upload:
    state = _ae_pt_state(sae_dir, tmp_path)
    state["decoder.weight"][7, 3] = float("-inf")
    return _ae_pt_upload(state, tmp_path)


def _ae_pt_in_the_legacy_format(sae_dir: Path, tmp_path: Path) -> Upload:
    return _ae_pt_upload(_ae_pt_state(sae_dir, tmp_path), tmp_path, _use_new_zipfile_serialization=False)


def _integer_weights(sae_dir: Path, tmp_path: Path) -> Upload:
    _rewrite_weights(sae_dir, lambda weights: {**weights, "b_dec": weights["b_dec"].to(torch.int64)})
    return factories.sae_upload_files(sae_dir), {}


def _unknown_architecture(sae_dir: Path, tmp_path: Path) -> Upload:
    cfg = json.loads((sae_dir / CFG_FILENAME).read_text())
    (sae_dir / CFG_FILENAME).write_text(json.dumps({**cfg, "architecture": "matching_pursuit"}))
    return factories.sae_upload_files(sae_dir), {}


class _RunsCode:
    """Unpickling this calls builtins.exec: what a malicious ae.pt does."""

    def __reduce__(self) -> tuple[Any, ...]:
        return builtins.exec, ("import pathlib; pathlib.Path('PWNED').write_text('ran')",)


def _code_running_pickle(sae_dir: Path, tmp_path: Path) -> Upload:
    buffer = io.BytesIO()
    torch.save({"encoder.weight": torch.zeros(48, 64), "payload": _RunsCode()}, buffer)
    config = {"trainer": {"dict_class": "AutoEncoder", "activation_dim": 64, "dict_size": 48}}
    return {
        "cfg_file": SimpleUploadedFile(CONFIG_JSON, json.dumps(config).encode()),
        "weights_file": SimpleUploadedFile(AE_PT, buffer.getvalue()),
    }, {"hook_name": factories.TINY_HOOK}


def _tar_archive(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as bundle:
        for member, data in members:
            bundle.addfile(member, io.BytesIO(data) if data is not None else None)
    return SimpleUploadedFile("sae.tar.gz", buffer.getvalue())


def _tar_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    return member, data


def _tar_escaping_its_directory(sae_dir: Path, tmp_path: Path) -> Upload:
    archive = _tar_archive([
        _tar_member("sae/cfg.json", (sae_dir / CFG_FILENAME).read_bytes()),
        _tar_member("sae/../../sae_weights.safetensors", (sae_dir / WEIGHTS_FILENAME).read_bytes()),
    ])
    return {"archive": archive}, {}


def _tar_with_symlink(sae_dir: Path, tmp_path: Path) -> Upload:
    link = tarfile.TarInfo("sae/sae_weights.safetensors")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    cfg = _tar_member("sae/cfg.json", (sae_dir / CFG_FILENAME).read_bytes())
    return {"archive": _tar_archive([cfg, (link, None)])}, {}


def _zip_with_symlink(sae_dir: Path, tmp_path: Path) -> Upload:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.write(sae_dir / CFG_FILENAME, "sae/cfg.json")
        link = zipfile.ZipInfo("sae/sae_weights.safetensors")
        link.external_attr = 0o120777 << 16
        bundle.writestr(link, "/etc/passwd")
    return {"archive": SimpleUploadedFile("sae.zip", buffer.getvalue())}, {}


def _files_and_an_archive(sae_dir: Path, tmp_path: Path) -> Upload:
    other = factories.sae_lens_write(tmp_path / "other", d_in=64, d_sae=32)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for path in other.iterdir():
            bundle.write(path, f"other/{path.name}")
    return {**factories.sae_upload_files(sae_dir), "archive": SimpleUploadedFile("other.zip", buffer.getvalue())}, {}


SPOILED_UPLOADS: dict[str, tuple[Callable[[Path, Path], Upload], list[str]]] = {
    "wrong shapes": (_wrong_shapes, ["W_dec", "[40,"]),
    "wrong tensor names": (_wrong_tensor_names, ["W_encoder", "W_enc"]),
    "truncated file": (_truncated, ["truncated"]),
    "not safetensors": (_not_safetensors, ["not a safetensors file"]),
    # The tiny model's d_model is 64 (asserted in the test).
    "d_in mismatch": (_d_in_mismatch, ["W_enc is [72, 32] but the model&#x27;s blocks.0.hook_resid_post has width 64"]),
    "unknown hook": (_unknown_hook, ["has no hook named &#x27;blocks.9.hook_nope&#x27;; it has layers 0-1, and hook "
                                     "names look like blocks.1.hook_resid_post"]),
    "broken cfg.json": (_broken_cfg, ["cfg.json is not valid JSON"]),
    "archive escaping its directory": (_archive_escaping_its_directory, ["unsafe path"]),
    "no files": (_no_files, ["Upload cfg.json and sae_weights.safetensors"]),
    "header longer than the file": (_header_longer_than_file, ["sae_weights.safetensors is truncated: its header"]),
    "missing tensor": (_missing_tensor, ["missing tensor b_dec for architecture standard"]),
    "NaN or Inf weights": (_nan_weights, ["has 1 NaN or infinite values"]),
    "NaN in bf16 weights": (_nan_in_bf16_weights, ["tensor W_dec has 1 NaN or infinite values"]),
    "ae.pt with an Inf": (_ae_pt_with_an_inf, ["tensor W_dec has 1 NaN or infinite values"]),
    "ae.pt in the legacy format": (_ae_pt_in_the_legacy_format, ["ae.pt is not a readable PyTorch state dict",
                                                                "save it again"]),
    "unsupported dtype": (_integer_weights, ["tensor b_dec is stored as I64; supported dtypes: F32, F16, BF16"]),
    "unknown architecture": (_unknown_architecture, ["architecture &#x27;matching_pursuit&#x27; is not supported"]),
    "ae.pt that would run code": (_code_running_pickle, ["ae.pt was refused", "would run code",
                                                         "torch.save(ae.state_dict(), &#x27;ae.pt&#x27;)"]),
    "files and an archive": (_files_and_an_archive, ["Send either cfg.json and the weights (cfg_file, weights_file), "
                                                     "or one archive, not both"]),
    "tar escaping its directory": (_tar_escaping_its_directory, ["unsafe path"]),
    "tar with a symlink": (_tar_with_symlink, ["which is a link or special file"]),
    "zip with a symlink": (_zip_with_symlink, ["symbolic link"]),
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
    assert not Path("PWNED").exists()


def test_decompression_bomb_is_refused(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path,
    settings: Any,
) -> None:
    settings.ATLAS_MAX_UPLOAD_BYTES = 1_000_000
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        bundle.write(sae_dir / CFG_FILENAME, "sae/cfg.json")
        bundle.writestr("sae/sae_weights.safetensors", b"\0" * 50_000_000)
    assert len(buffer.getvalue()) < 100_000
    status, page = _post(logged_in_client, language_model, dataset,
                         {"archive": SimpleUploadedFile("bomb.zip", buffer.getvalue())})
    assert status == 200
    assert "bomb.zip unpacks to more than the 1,000,000 byte upload limit" in page
    _assert_nothing_stored(media_root)


def test_file_over_the_size_limit_is_refused(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, sae_dir: Path, media_root: Path,
    settings: Any,
) -> None:
    settings.ATLAS_MAX_UPLOAD_BYTES = (sae_dir / WEIGHTS_FILENAME).stat().st_size - 1
    status, page = _post(logged_in_client, language_model, dataset, factories.sae_upload_files(sae_dir))
    assert status == 200
    assert "sae_weights.safetensors is" in page and "over the" in page and "byte limit" in page
    _assert_nothing_stored(media_root)


def test_an_upload_longer_than_it_claims_stops_at_the_limit(media_root: Path, settings: Any, tmp_path: Path) -> None:
    from atlas.saes.services import SaeUploadError, _save_upload

    settings.ATLAS_MAX_UPLOAD_BYTES = 10_000
    upload = SimpleUploadedFile("big.safetensors", b"x" * 50_000)
    upload.size = None  # type: ignore[assignment]  # as a streamed upload with no declared length
    with pytest.raises(SaeUploadError) as raised:
        _save_upload(upload, tmp_path / "target", "weights_file")
    assert "over the 10,000 byte limit" in raised.value.message


def test_dictionary_learning_upload_is_accepted(
    logged_in_client: Client, language_model: LanguageModel, dataset: Dataset, tmp_path: Path
) -> None:
    sae = factories.dictionary_learning_make("AutoEncoderTopK", d_in=64, d_sae=40)
    directory = factories.dictionary_learning_write(tmp_path / "trainer_0", sae, dict_class="AutoEncoderTopK")
    files = {
        "cfg_file": SimpleUploadedFile(CONFIG_JSON, (directory / CONFIG_JSON).read_bytes()),
        "weights_file": SimpleUploadedFile(AE_PT, (directory / AE_PT).read_bytes()),
    }
    status, _ = _post(logged_in_client, language_model, dataset, files)
    assert status == 302
    stored = Sae.objects.get()
    assert (stored.architecture, stored.hook_name, stored.slug) == ("topk", factories.TINY_HOOK, "0-res-40")
    assert sorted(path.name for path in stored.files_path.iterdir()) == [AE_PT, CONFIG_JSON]


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
