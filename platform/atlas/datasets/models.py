"""A tokenized dataset: N sequences of a fixed context length, stored as one .npy file."""

from pathlib import Path

from django.conf import settings
from django.db import models

from atlas.lms.models import LanguageModel


class Dataset(models.Model):
    class SourceKind(models.TextChoices):
        UPLOAD = "upload", "uploaded .txt / .jsonl file"
        PATH = "path", "file on the server"
        HUGGINGFACE = "huggingface", "Hugging Face dataset"

    slug = models.SlugField(max_length=100, unique=True)
    language_model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="datasets")
    source_kind = models.CharField(max_length=32, choices=SourceKind.choices)
    source = models.CharField(max_length=1000)
    context_length = models.PositiveIntegerField()
    n_sequences = models.PositiveIntegerField()
    tokens_file = models.CharField(max_length=500, help_text="path under MEDIA_ROOT")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def n_tokens(self) -> int:
        return self.n_sequences * self.context_length

    @property
    def tokens_path(self) -> Path:
        return Path(settings.MEDIA_ROOT) / self.tokens_file
