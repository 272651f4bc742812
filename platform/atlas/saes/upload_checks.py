"""The CPU-heavy checks of an upload (unpacking an archive, reading every value) in a separate, niced process.

A web process serves reads from threads that share one interpreter lock; an upload checked in a request thread
would hold that lock for seconds at a time and stall every read the process serves. Here the request thread only
waits on a future. The child runs pure code (the archive reader and workers.compute.sae_files): no Django setup,
no database. Each web process starts its pool lazily, at its first upload.
"""

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from atlas.saes.archives import sae_archive_unpack
from workers.compute.sae_files import SaeConfig, sae_files_check

# How far below the web process the checks run, so the scheduler serves reads first on a busy machine.
CHECK_NICENESS = 10

_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()


class UploadCheckStopped(RuntimeError):
    """The check process ended before answering (killed, or out of memory)."""


@dataclass(frozen=True)
class PackedSae:
    """An uploaded archive saved at `path`, as the user named it, to unpack into at most max_bytes."""

    path: Path
    name: str
    max_bytes: int


def sae_files_unpack_and_check(staging: Path, archive: PackedSae | None) -> SaeConfig:
    """Runs in the child: unpack the archive into staging if there is one, then check every file and value."""
    if archive is not None:
        try:
            sae_archive_unpack(archive.path, archive.name, staging, archive.max_bytes)
        finally:
            archive.path.unlink(missing_ok=True)
    return sae_files_check(staging)


def _pool_get() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            # spawn, not fork: forking a process that runs threads (gunicorn's gthread workers) can copy a held lock.
            _pool = ProcessPoolExecutor(
                max_workers=settings.ATLAS_UPLOAD_CHECK_PROCESSES,
                mp_context=multiprocessing.get_context("spawn"),
                # os.nice itself, so the child lowers its priority before it imports this module and its own.
                initializer=os.nice,
                initargs=(CHECK_NICENESS,),
            )
        return _pool


def _pool_discard(broken: ProcessPoolExecutor) -> None:
    global _pool
    with _pool_lock:
        if _pool is broken:
            _pool = None
    broken.shutdown(wait=False, cancel_futures=True)


def upload_files_check(staging: Path, archive: PackedSae | None = None) -> SaeConfig:
    """The config of the SAE in staging (after unpacking archive there), every value checked in the check process.

    Raises what the checks raise (ArchiveError, SaeFormatError), or UploadCheckStopped if the process died.
    """
    pool = _pool_get()
    try:
        future = pool.submit(sae_files_unpack_and_check, staging, archive)
    except BrokenProcessPool:
        # An earlier check's process died; this check has not started, so it goes to a fresh pool.
        _pool_discard(pool)
        pool = _pool_get()
        future = pool.submit(sae_files_unpack_and_check, staging, archive)
    try:
        return future.result()
    except BrokenProcessPool as error:
        _pool_discard(pool)
        raise UploadCheckStopped(str(error)) from error
