"""Where a language model comes from, and its tokenizer for text: no torch and no transformers, so the web may use it.

The web process tokenizes datasets and reads vocabularies with the small `tokenizers` library alone. A model's
tokenizer is stored as a TokenizerDefinition when the model is registered (atlas.lms), which may load
transformers; a local Hugging Face directory can also be read directly (tokenizer.json and its configs).
"""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tokenizers import Tokenizer

# A Hugging Face model directory's files that matter here.
HF_CONFIG_FILENAME = "config.json"
HF_TOKENIZER_FILENAME = "tokenizer.json"
HF_TOKENIZER_CONFIG_FILENAME = "tokenizer_config.json"
HF_SPECIAL_TOKENS_FILENAME = "special_tokens_map.json"


class LanguageModelError(ValueError):
    """A language model or its tokenizer cannot be loaded; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class ModelSource:
    """Where a language model comes from: a transformer-lens name (hub) or a local HF directory."""

    kind: Literal["transformer_lens", "hf_local"]
    name_or_path: str


@dataclass(frozen=True)
class TokenizerDefinition:
    """A tokenizer as stored for the web: the `tokenizers` library's JSON, and the ids of BOS and EOS."""

    json: str
    bos_token_id: int | None
    eos_token_id: int | None


@dataclass(frozen=True)
class ModelFacts:
    """Shapes, vocabulary and tokenizer of a loaded model: everything the platform checks uploads against and
    reads text with, stored when the model is registered."""

    d_model: int
    n_layers: int
    n_ctx: int
    d_vocab: int
    hook_widths: dict[str, int]  # hook name -> width of its last dimension, heads flattened
    vocabulary: list[str]  # vocabulary[token_id] is that token decoded on its own
    tokenizer: TokenizerDefinition


class TextTokenizer:
    """A model's tokenizer with nothing but the `tokenizers` library: text to token ids, and the vocabulary."""

    def __init__(self, definition: TokenizerDefinition) -> None:
        try:
            self._tokenizer = Tokenizer.from_str(definition.json)
        except Exception as error:  # tokenizers raises a bare Exception for any definition it cannot build
            raise LanguageModelError(f"The tokenizer cannot be read ({error}); register the model again.") from error
        # A tokenizer.json may carry padding or truncation meant for training; ids must be the text's, all of them.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.bos_token_id = definition.bos_token_id
        self.eos_token_id = definition.eos_token_id

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, without special tokens: what transformers' tokenizer(texts,
        add_special_tokens=False) gives."""
        return [encoding.ids for encoding in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def get_vocab(self) -> dict[str, int]:
        """Every token piece (as the tokenizer spells it, e.g. 'Ġthe') and its id, added tokens included."""
        vocab: dict[str, int] = self._tokenizer.get_vocab(with_added_tokens=True)
        return vocab


def hf_directory(source: ModelSource) -> Path:
    directory = Path(source.name_or_path)
    if not (directory / HF_CONFIG_FILENAME).is_file():
        raise LanguageModelError(f"{directory} is not a Hugging Face model directory (no {HF_CONFIG_FILENAME}).")
    return directory


def load_tokenizer(source: ModelSource) -> TextTokenizer:
    """The tokenizer of a local Hugging Face directory, read from its files without loading any weights.

    A transformer-lens model's tokenizer is on the hub; the one stored when it was registered is what to use.
    """
    if source.kind == "transformer_lens":
        raise LanguageModelError(
            f"{source.name_or_path}'s tokenizer comes from the hub; use the one stored when it was registered."
        )
    return TextTokenizer(tokenizer_definition_read(hf_directory(source)))


def tokenizer_definition_read(directory: Path) -> TokenizerDefinition:
    """tokenizer.json, with BOS and EOS named by tokenizer_config.json or special_tokens_map.json."""
    path = directory / HF_TOKENIZER_FILENAME
    if not path.is_file():
        raise LanguageModelError(
            f"{directory} has no {HF_TOKENIZER_FILENAME} (a tokenizer saved without the tokenizers library); "
            "register the model with atlas_model_add, which stores one."
        )
    text = path.read_text(encoding="utf-8")
    tokenizer = TextTokenizer(TokenizerDefinition(text, None, None))
    vocab = tokenizer.get_vocab()
    special = {**_json_object(directory / HF_SPECIAL_TOKENS_FILENAME),
               **_json_object(directory / HF_TOKENIZER_CONFIG_FILENAME)}
    return TokenizerDefinition(
        json=text,
        bos_token_id=vocab.get(_token_text(special.get("bos_token")) or ""),
        eos_token_id=vocab.get(_token_text(special.get("eos_token")) or ""),
    )


def _json_object(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LanguageModelError(f"{path} is not valid JSON: {error}") from error
    return value if isinstance(value, dict) else {}


def _token_text(value: object) -> str | None:
    """A special token as the configs write it: its text, or an AddedToken's {"content": text, ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None
