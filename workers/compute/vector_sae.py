"""A set of vectors as a linear 'SAE', so that the dashboard engine computes their dashboards as a feature's.

Feature i's activation is relu(h·w_i + b_i): architecture "standard" with W_enc's columns the vectors, b_enc the
biases and b_dec zero (never subtracted). Its decoder row is w_i / |w_i|, so the logit lens, the decoder neighbours
and steering see the direction itself, at unit length. Numpy only: the web process writes these files.
"""

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import save_file

from workers.compute.sae_files import CFG_FILENAME, WEIGHTS_FILENAME

# cfg.json's mark of a vector set ("atlas_source": "vectors") and the key listing its vectors, feature i the i-th.
SOURCE_KEY, VECTOR_SAE_SOURCE, VECTORS_KEY = "atlas_source", "vectors", "atlas_vectors"
DTYPE = np.float32


class VectorSaeError(ValueError):
    """Vectors that make no SAE; the message says which and why."""


@dataclass(frozen=True)
class VectorInSae:
    """One vector of the set: its id and label (kept in cfg.json for pages), values [d_in] and bias."""

    id: int
    label: str
    values: npt.NDArray[np.float32]
    bias: float = 0.0


def vector_sae_tensors(vectors: npt.ArrayLike, biases: npt.ArrayLike) -> dict[str, npt.NDArray[np.float32]]:
    """The SAELens tensors of vectors [n, d_in] with biases [n]: W_enc [d_in, n], W_dec [n, d_in], b_enc [n],
    b_dec [d_in]."""
    w = np.asarray(vectors, dtype=DTYPE)
    b = np.asarray(biases, dtype=DTYPE)
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise VectorSaeError(f"vectors must be [n, d_in] with n, d_in > 0; they are {list(w.shape)}")
    if b.shape != (w.shape[0],):
        raise VectorSaeError(f"{w.shape[0]} vectors need {w.shape[0]} biases; there are {list(b.shape)}")
    if not (np.isfinite(w).all() and np.isfinite(b).all()):
        raise VectorSaeError("the vectors and biases must be finite float32 values")
    norms = np.linalg.norm(w.astype(np.float64), axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise VectorSaeError(f"vector {int(zero[0])} is zero, so it has no direction to decode to")
    return {
        "W_enc": np.ascontiguousarray(w.T),
        "W_dec": (w.astype(np.float64) / norms[:, None]).astype(DTYPE),
        "b_enc": b,
        "b_dec": np.zeros(w.shape[1], dtype=DTYPE),
    }


def vector_sae_config(vectors: Sequence[VectorInSae], *, hook_name: str, model_name: str) -> dict[str, Any]:
    """cfg.json as SAELens 6 writes it for a standard SAE, with the mark of a vector set and its vectors."""
    return {
        "architecture": "standard",
        "d_in": int(vectors[0].values.shape[0]),
        "d_sae": len(vectors),
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": False,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": {"hook_name": hook_name, "model_name": model_name},
        SOURCE_KEY: VECTOR_SAE_SOURCE,
        VECTORS_KEY: [
            {"id": vector.id, "label": vector.label, "bias": vector.bias,
             "norm": math.sqrt(float(np.square(vector.values.astype(np.float64)).sum()))}
            for vector in vectors
        ],
    }


def vector_sae_write(directory: Path, vectors: Sequence[VectorInSae], *, hook_name: str,
                     model_name: str) -> dict[str, Any]:
    """Write the set's cfg.json and sae_weights.safetensors into directory (made if missing); the config."""
    if not vectors:
        raise VectorSaeError("a vector SAE needs at least one vector")
    widths = {int(vector.values.shape[0]) for vector in vectors}
    if len(widths) != 1:
        raise VectorSaeError(f"the vectors must all have one width; they have {sorted(widths)}")
    tensors = vector_sae_tensors(np.stack([vector.values for vector in vectors]),
                                 [vector.bias for vector in vectors])
    config = vector_sae_config(vectors, hook_name=hook_name, model_name=model_name)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / WEIGHTS_FILENAME))
    (directory / CFG_FILENAME).write_text(json.dumps(config, indent=2))
    return config


@dataclass(frozen=True)
class VectorSaeEntry:
    """A vector as a stored vector SAE's cfg.json lists it."""

    id: int
    label: str
    bias: float
    norm: float


def vector_sae_entries(cfg: Mapping[str, Any]) -> list[VectorSaeEntry] | None:
    """The vectors a stored SAE's cfg lists, feature i the i-th; None for an SAE that is not a vector set."""
    listed = cfg.get(VECTORS_KEY)
    if cfg.get(SOURCE_KEY) != VECTOR_SAE_SOURCE or not isinstance(listed, list):
        return None
    return [VectorSaeEntry(id=int(entry["id"]), label=str(entry["label"]), bias=float(entry["bias"]),
                           norm=float(entry["norm"])) for entry in listed]
