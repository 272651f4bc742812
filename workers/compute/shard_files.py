"""A shard's state on disk, where the worker that merges the run finds it: plain .npy files, no pickle."""

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from workers.compute.results import ActiveLayout, ShardState

_ARRAYS = ("top_score", "top_seq", "top_pos", "max_act", "active_keys", "active_values")
_META = "shard.json"


def shard_state_save(state: ShardState, directory: Path) -> None:
    """Write state into directory atomically: it appears complete or not at all.

    A shard delivered twice may finish twice; the second copy is equal and is thrown away.
    """
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for name in _ARRAYS:
            np.save(staging / f"{name}.npy", getattr(state, name), allow_pickle=False)
        meta = {
            "first_seq": state.first_seq,
            "n_seqs": state.n_seqs,
            "layout": asdict(state.layout),
            "in_residual_space": state.in_residual_space,
        }
        (staging / _META).write_text(json.dumps(meta))
        try:
            os.replace(staging, directory)
        except OSError:
            if not shard_state_exists(directory):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def shard_state_exists(directory: Path) -> bool:
    return (directory / _META).is_file()


def shard_state_load(directory: Path) -> ShardState:
    """The state shard_state_save wrote; the large arrays are memory-mapped, not read."""
    meta = json.loads((directory / _META).read_text())
    arrays = {name: np.load(directory / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in _ARRAYS}
    return ShardState(
        first_seq=int(meta["first_seq"]),
        n_seqs=int(meta["n_seqs"]),
        layout=ActiveLayout(**meta["layout"]),
        in_residual_space=bool(meta["in_residual_space"]),
        **arrays,
    )
