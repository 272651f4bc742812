"""Registering language models: load once to read their shapes, hooks, vocabulary and tokenizer."""

from django.db import transaction

from atlas.lms.models import LanguageModel, Tokenizer, Vocabulary
from workers.compute.model_source import LanguageModelError, ModelFacts, ModelSource

__all__ = ["RESERVED_SLUGS", "LanguageModelError", "language_model_register", "language_model_store"]

# First path segments the site uses for itself; a model slug may not take them.
RESERVED_SLUGS = frozenset({"api", "admin", "accounts", "static", "upload", "datasets", "media", "runs"})
# Postgres text cannot hold NUL; byte-level vocabularies have a token for it.
_STORABLE = str.maketrans({"\x00": "\u2400"})


def _check_slug(slug: str) -> None:
    if slug in RESERVED_SLUGS:
        raise LanguageModelError(f"'{slug}' is a path the site uses; choose another model id.")


def language_model_store(*, slug: str, display_name: str, source: ModelSource, facts: ModelFacts) -> LanguageModel:
    """Create or refresh a model's record from facts read off the loaded model."""
    _check_slug(slug)
    with transaction.atomic():
        language_model, _ = LanguageModel.objects.update_or_create(
            slug=slug,
            defaults={
                "display_name": display_name,
                "source_kind": source.kind,
                "source": source.name_or_path,
                "d_model": facts.d_model,
                "n_layers": facts.n_layers,
                "n_ctx": facts.n_ctx,
                "d_vocab": facts.d_vocab,
                "hook_widths": facts.hook_widths,
            },
        )
        tokens = [token.translate(_STORABLE) for token in facts.vocabulary]
        Vocabulary.objects.update_or_create(language_model=language_model, defaults={"tokens": tokens})
        tokenizer = facts.tokenizer
        Tokenizer.objects.update_or_create(language_model=language_model, defaults={
            "definition": tokenizer.json, "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        })
    return language_model


def language_model_register(*, slug: str, display_name: str, source: ModelSource) -> LanguageModel:
    """Load the model (proving the worker can load it too) and store what uploads are checked against."""
    _check_slug(slug)  # before the load, which takes seconds
    # Imported here, not above: loading needs torch and transformer-lens, which only registration (a management
    # command) may pay for; the web process imports this module's neighbours and must never import them.
    from workers.compute.language_model import load_language_model, model_facts

    facts = model_facts(load_language_model(source, device="cpu"))
    return language_model_store(slug=slug, display_name=display_name, source=source, facts=facts)
