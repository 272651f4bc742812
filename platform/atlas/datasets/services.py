"""Creating datasets: tokenize text once with the model's tokenizer and store the sequences."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files import File
from django.db import transaction

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.lms.selectors import tokenizer_for
from workers.compute.corpus import (
    CorpusFormatError,
    documents_from_jsonl,
    documents_from_txt,
    tokenize_into_sequences,
)
from workers.compute.model_source import LanguageModelError


class DatasetError(ValueError):
    """A dataset that cannot be made; the message says why, for the form or the command line."""


def dataset_documents_from_file(upload: File[bytes]) -> list[str]:
    """Documents from an uploaded .txt (paragraphs) or .jsonl (one {"text": ...} per line)."""
    name = (upload.name or "").lower()
    text = b"".join(upload.chunks()).decode("utf-8", errors="replace")
    if name.endswith(".jsonl"):
        try:
            return documents_from_jsonl(text.splitlines())
        except CorpusFormatError as error:
            raise DatasetError(str(error)) from error
    if name.endswith(".txt"):
        return documents_from_txt(text)
    raise DatasetError(f"{upload.name} is neither .txt nor .jsonl; upload plain text or JSON lines.")


def dataset_documents_from_huggingface(name: str, field: str = "text", limit: int = 100_000) -> list[str]:
    """Documents from a Hugging Face dataset (deployments with hub access only)."""
    from datasets import load_dataset

    rows = load_dataset(name, split="train", streaming=True)
    return [str(row[field]) for _, row in zip(range(limit), rows, strict=False)]


def dataset_create(
    *,
    slug: str,
    language_model: LanguageModel,
    documents: Iterable[str],
    source_kind: str,
    source: str,
    context_length: int,
    max_sequences: int | None = None,
) -> Dataset:
    if Dataset.objects.filter(slug=slug).exists():
        raise DatasetError(f"A dataset named '{slug}' already exists; choose another name.")
    if context_length > language_model.n_ctx:
        raise DatasetError(
            f"Context length {context_length} is longer than {language_model.slug}'s maximum of {language_model.n_ctx}."
        )
    try:
        # The tokenizers library alone (no transformers), as stored when the model was registered.
        tokenizer = tokenizer_for(language_model)
        tokens = tokenize_into_sequences(tokenizer, documents, context_length, max_sequences=max_sequences)
    except (CorpusFormatError, LanguageModelError) as error:
        raise DatasetError(str(error)) from error
    relative = Path("datasets") / f"{slug}-{uuid.uuid4().hex[:8]}.npy"
    path = Path(settings.MEDIA_ROOT) / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, tokens.astype(np.int32))
    try:
        with transaction.atomic():
            return Dataset.objects.create(
                slug=slug,
                language_model=language_model,
                source_kind=source_kind,
                source=source,
                context_length=context_length,
                n_sequences=int(tokens.shape[0]),
                tokens_file=str(relative),
            )
    except Exception:
        path.unlink(missing_ok=True)
        raise
