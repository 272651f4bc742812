"""Safe unpacking of uploaded SAE archives: only regular files, no paths outside, bounded size."""

import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from workers.compute.sae_files import DICTIONARY_LEARNING_FILES, DICTIONARY_LEARNING_WEIGHTS_FILENAME, SAE_LENS_FILES

# The files of a SAELens SAE directory and of a dictionary_learning trainer folder; anything else is ignored.
SAE_FILE_NAMES = (*SAE_LENS_FILES, "sparsity.safetensors", *DICTIONARY_LEARNING_FILES)
_COPY_CHUNK = 1024 * 1024


class ArchiveError(ValueError):
    pass


def _checked_member_name(name: str) -> str | None:
    """The SAE file a member holds, or None; refuses names that escape the archive."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise ArchiveError(f"The archive contains the unsafe path '{name}'; pack only the SAE directory.")
    return path.name if path.name in SAE_FILE_NAMES else None


@dataclass
class _Budget:
    """Bytes an archive may still unpack to; a decompression bomb stops as soon as it passes the limit."""

    limit: int
    used: int = 0

    def spend(self, size: int, archive_name: str) -> None:
        self.used += size
        if self.used > self.limit:
            raise ArchiveError(
                f"{archive_name} unpacks to more than the {self.limit:,} byte upload limit; "
                "upload the files themselves or raise ATLAS_MAX_UPLOAD_BYTES."
            )


def _copy_bounded(source: IO[bytes], target: Path, budget: _Budget, archive_name: str) -> None:
    with open(target, "wb") as out:
        while chunk := source.read(_COPY_CHUNK):
            budget.spend(len(chunk), archive_name)
            out.write(chunk)


def _claim(found: set[str], name: str, archive_name: str) -> None:
    if name in found:
        raise ArchiveError(f"{archive_name} holds more than one {name}; pack a single SAE directory.")
    found.add(name)


def _unpack_zip(archive: Path, name_shown: str, into: Path, budget: _Budget) -> set[str]:
    found: set[str] = set()
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            if info.is_dir():
                continue
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise ArchiveError(f"The archive contains the symbolic link '{info.filename}'; links are refused.")
            name = _checked_member_name(info.filename)
            if name is None:
                continue
            _claim(found, name, name_shown)
            with bundle.open(info) as source:
                _copy_bounded(source, into / name, budget, name_shown)
    return found


def _unpack_tar(archive: Path, name_shown: str, into: Path, budget: _Budget) -> set[str]:
    found: set[str] = set()
    with tarfile.open(archive, mode="r:*") as bundle:
        for member in bundle:
            if member.isdir():
                continue
            if not member.isfile():
                raise ArchiveError(
                    f"The archive contains '{member.name}', which is a link or special file; "
                    "only plain files are accepted."
                )
            name = _checked_member_name(member.name)
            if name is None:
                continue
            _claim(found, name, name_shown)
            source = bundle.extractfile(member)
            if source is None:
                continue
            with source:
                _copy_bounded(source, into / name, budget, name_shown)
    return found


def sae_archive_unpack(archive: Path, original_name: str, into: Path, max_bytes: int) -> None:
    """Unpack the SAE files of a .zip or .tar(.gz) into `into` (flat), or raise ArchiveError."""
    lowered = original_name.lower()
    try:
        if lowered.endswith(".zip"):
            found = _unpack_zip(archive, original_name, into, _Budget(max_bytes))
        elif lowered.endswith((".tar.gz", ".tgz", ".tar")):
            found = _unpack_tar(archive, original_name, into, _Budget(max_bytes))
        else:
            raise ArchiveError(f"{original_name} is not a .zip, .tar.gz or .tar archive.")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as error:
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True, exist_ok=True)
        raise ArchiveError(f"{original_name} could not be read as an archive ({error}); is it complete?") from error
    dictionary_learning = DICTIONARY_LEARNING_WEIGHTS_FILENAME in found and not found & set(SAE_LENS_FILES)
    required = DICTIONARY_LEARNING_FILES if dictionary_learning else SAE_LENS_FILES
    missing = [name for name in required if name not in found]
    if missing:
        raise ArchiveError(
            f"{original_name} has no {' or '.join(missing)}; an SAELens SAE directory holds cfg.json and "
            "sae_weights.safetensors, a dictionary_learning trainer folder config.json and ae.pt."
        )
