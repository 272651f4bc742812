"""Reads about language models: token text for stored token ids."""

from functools import lru_cache

from atlas.lms.models import LanguageModel, Vocabulary
from workers.compute.model_source import ModelSource


@lru_cache(maxsize=8)
def _vocabulary(language_model_id: int, registered: float) -> tuple[str, ...]:
    return tuple(Vocabulary.objects.get(language_model_id=language_model_id).tokens)


def vocabulary_for(language_model: LanguageModel) -> tuple[str, ...]:
    """The vocabulary, loaded once per process (and again if the model is registered anew)."""
    return _vocabulary(language_model.pk, language_model.created.timestamp())


def tokens_text(vocabulary: tuple[str, ...], token_ids: list[int]) -> list[str]:
    return [vocabulary[token] if 0 <= token < len(vocabulary) else f"<{token}>" for token in token_ids]


def language_models_list() -> list[LanguageModel]:
    return list(LanguageModel.objects.all())


def language_model_source(language_model: LanguageModel) -> ModelSource:
    """How the compute package should load this model."""
    if language_model.source_kind == LanguageModel.SourceKind.HF_LOCAL:
        return ModelSource(kind="hf_local", name_or_path=language_model.source)
    return ModelSource(kind="transformer_lens", name_or_path=language_model.source)
