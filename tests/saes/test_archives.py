"""Archive unpacking: SAE files only, flat, nothing outside the target, no links, bounded size."""

import io
import re
import tarfile
import zipfile
from pathlib import Path

import pytest

from atlas.saes.archives import ArchiveError, sae_archive_unpack

CFG = b'{"d_in": 4}'
WEIGHTS = b"weights"


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
        for name, data in members.items():
            bundle.writestr(name, data)
    return path


def _tar(path: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as bundle:
        for member in members:
            payload = data.get(member.name)
            bundle.addfile(member, io.BytesIO(payload) if payload is not None else None)
    return path


def _file(name: str, data: bytes) -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    return member


def test_nested_directory_unpacks_flat(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"run/sae/cfg.json": CFG, "run/sae/sae_weights.safetensors": WEIGHTS,
                                        "run/README.md": b"ignored"})
    into = tmp_path / "out"
    into.mkdir()
    sae_archive_unpack(archive, "a.zip", into, max_bytes=10_000)
    assert sorted(path.name for path in into.iterdir()) == ["cfg.json", "sae_weights.safetensors"]
    assert (into / "cfg.json").read_bytes() == CFG


def test_tar_symlink_is_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("sae/cfg.json")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    archive = _tar(tmp_path / "a.tar.gz", [link], {})
    with pytest.raises(ArchiveError, match="link or special file"):
        sae_archive_unpack(archive, "a.tar.gz", tmp_path, max_bytes=10_000)


def test_tar_parent_path_is_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar.gz", [_file("../cfg.json", CFG)], {"../cfg.json": CFG})
    with pytest.raises(ArchiveError, match=re.escape("unsafe path '../cfg.json'")):
        sae_archive_unpack(archive, "a.tar.gz", tmp_path / "x", max_bytes=10_000)


def test_decompression_bomb_stops_at_the_limit(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "bomb.zip", {"cfg.json": CFG, "sae_weights.safetensors": b"\0" * 5_000_000})
    assert archive.stat().st_size < 100_000
    into = tmp_path / "out"
    into.mkdir()
    with pytest.raises(ArchiveError, match="more than the 1,000,000 byte upload limit"):
        sae_archive_unpack(archive, "bomb.zip", into, max_bytes=1_000_000)
    assert sum(path.stat().st_size for path in into.iterdir()) <= 1_000_000 + 1024 * 1024


def test_missing_weights_are_named(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"cfg.json": CFG})
    with pytest.raises(ArchiveError, match=re.escape("has no sae_weights.safetensors")):
        sae_archive_unpack(archive, "a.zip", tmp_path, max_bytes=10_000)


def test_two_saes_in_one_archive_are_refused(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "a.zip", {"a/cfg.json": CFG, "b/cfg.json": CFG})
    with pytest.raises(ArchiveError, match=re.escape("more than one cfg.json")):
        sae_archive_unpack(archive, "a.zip", tmp_path, max_bytes=10_000)


def test_corrupt_archive_says_so(tmp_path: Path) -> None:
    archive = tmp_path / "a.zip"
    archive.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ArchiveError, match="could not be read as an archive"):
        sae_archive_unpack(archive, "a.zip", tmp_path, max_bytes=10_000)


def test_dictionary_learning_trainer_folder_unpacks(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "trainer.zip", {"trainer_0/config.json": CFG, "trainer_0/ae.pt": WEIGHTS,
                                               "trainer_0/checkpoints/ae_100.pt": WEIGHTS})
    into = tmp_path / "out"
    into.mkdir()
    sae_archive_unpack(archive, "trainer.zip", into, max_bytes=1_000_000)
    assert sorted(path.name for path in into.iterdir()) == ["ae.pt", "config.json"]


def test_dictionary_learning_folder_without_config_is_named(tmp_path: Path) -> None:
    archive = _zip(tmp_path / "trainer.zip", {"trainer_0/ae.pt": WEIGHTS})
    into = tmp_path / "out"
    into.mkdir()
    with pytest.raises(ArchiveError, match=re.escape("trainer.zip has no config.json")):
        sae_archive_unpack(archive, "trainer.zip", into, max_bytes=1_000_000)
