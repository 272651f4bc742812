"""Where a language model comes from, and its tokenizer: light enough for the web process to import."""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from transformers import AutoTokenizer, PreTrainedTokenizerBase


class LanguageModelError(ValueError):
    """A model source cannot be loaded; the message says what is wrong with it."""


@dataclass(frozen=True)
class ModelSource:
    """Where a language model comes from: a transformer-lens name (hub) or a local HF directory."""

    kind: Literal["transformer_lens", "hf_local"]
    name_or_path: str


def hf_directory(source: ModelSource) -> Path:
    directory = Path(source.name_or_path)
    if not (directory / "config.json").is_file():
        raise LanguageModelError(f"{directory} is not a Hugging Face model directory (no config.json).")
    return directory


def load_tokenizer(source: ModelSource) -> PreTrainedTokenizerBase:
    """The model's tokenizer alone, without loading any weights."""
    if source.kind == "transformer_lens":
        # transformer-lens takes seconds to import; only hub-named models need its name table.
        from transformer_lens import loading_from_pretrained as tl_loading

        official_name = tl_loading.get_official_model_name(source.name_or_path)
        return AutoTokenizer.from_pretrained(official_name)
    return AutoTokenizer.from_pretrained(hf_directory(source))
