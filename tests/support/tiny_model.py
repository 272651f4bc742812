"""The tiny real model of the tests, with no Django: the GPU run imports it where only torch is installed."""

import tempfile
from functools import lru_cache
from pathlib import Path

from workers.compute.corpus import stdlib_docstrings
from workers.compute.language_model import ModelSource
from workers.compute.tiny_model import tiny_model_write

TINY_HOOK = "blocks.0.hook_resid_post"


@lru_cache(maxsize=1)
def tiny_model_dir() -> Path:
    """A tiny Llama with a tokenizer trained on stdlib docstrings, written once per test session."""
    return tiny_model_write(Path(tempfile.mkdtemp(prefix="atlas-tiny-")) / "tiny-llama", stdlib_docstrings(60_000))


def tiny_model_source() -> ModelSource:
    return ModelSource(kind="hf_local", name_or_path=str(tiny_model_dir()))
