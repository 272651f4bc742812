"""Reads about language models: token text for stored token ids, and the tokenizer for new text."""

from functools import lru_cache

from atlas.lms.models import LanguageModel, Tokenizer, Vocabulary
from workers.compute.model_source import (
    LanguageModelError,
    ModelSource,
    TextTokenizer,
    TokenizerDefinition,
    load_tokenizer,
)


@lru_cache(maxsize=8)
def _vocabulary(language_model_id: int, registered: float) -> tuple[str, ...]:
    return tuple(Vocabulary.objects.get(language_model_id=language_model_id).tokens)


def vocabulary_for(language_model: LanguageModel) -> tuple[str, ...]:
    """The vocabulary, loaded once per process (and again if the model is registered anew)."""
    return _vocabulary(language_model.pk, language_model.created.timestamp())


def tokens_text(vocabulary: tuple[str, ...], token_ids: list[int]) -> list[str]:
    """Each id's text; an id the vocabulary lacks shows as <id>. (The common case, every id known, is one map.)"""
    if token_ids and (min(token_ids) < 0 or max(token_ids) >= len(vocabulary)):
        return [vocabulary[token] if 0 <= token < len(vocabulary) else f"<{token}>" for token in token_ids]
    return list(map(vocabulary.__getitem__, token_ids))


def tokenizer_for(language_model: LanguageModel) -> TextTokenizer:
    """The model's tokenizer, with the `tokenizers` library alone: the one stored when it was registered.

    A model registered before tokenizers were stored falls back to its local directory's tokenizer.json; a
    transformer-lens one must be registered again (LanguageModelError says so).
    """
    stored = Tokenizer.objects.filter(language_model=language_model).only("stored").first()
    if stored is None:
        return _unstored_tokenizer(language_model)
    return _tokenizer(stored.pk, stored.stored.timestamp())


@lru_cache(maxsize=4)
def _tokenizer(tokenizer_id: int, stored: float) -> TextTokenizer:
    """Built once per process from its JSON (megabytes for a large vocabulary), again after a new registration."""
    row = Tokenizer.objects.get(pk=tokenizer_id)
    return TextTokenizer(TokenizerDefinition(row.definition, row.bos_token_id, row.eos_token_id))


def _unstored_tokenizer(language_model: LanguageModel) -> TextTokenizer:
    if language_model.source_kind == LanguageModel.SourceKind.HF_LOCAL:
        return load_tokenizer(language_model_source(language_model))
    raise LanguageModelError(
        f"{language_model.slug} was registered before its tokenizer was stored; "
        f"run `manage.py atlas_model_add {language_model.slug} --transformer-lens {language_model.source}` again."
    )


def language_models_list() -> list[LanguageModel]:
    return list(LanguageModel.objects.all())


def hook_names_known() -> list[str]:
    """Every hook an SAE may attach to on any registered model, for the upload form's suggestions."""
    names = {name for widths in LanguageModel.objects.values_list("hook_widths", flat=True) for name in widths}
    return sorted(names, key=_hook_order)


def _hook_order(name: str) -> tuple[int, str]:
    parts = name.split(".")
    return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else -1, name)


def language_model_source(language_model: LanguageModel) -> ModelSource:
    """How the compute package should load this model."""
    if language_model.source_kind == LanguageModel.SourceKind.HF_LOCAL:
        return ModelSource(kind="hf_local", name_or_path=language_model.source)
    return ModelSource(kind="transformer_lens", name_or_path=language_model.source)
