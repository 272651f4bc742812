"""A language model record: where its weights come from and the shapes an SAE must match."""

from django.db import models


class LanguageModel(models.Model):
    class SourceKind(models.TextChoices):
        TRANSFORMER_LENS = "transformer_lens", "transformer-lens model name (downloaded from the hub)"
        HF_LOCAL = "hf_local", "local Hugging Face directory"

    # The Neuronpedia modelId, used in URLs: /<slug>/<sae>/<index>.
    slug = models.SlugField(max_length=100, unique=True)
    display_name = models.CharField(max_length=200)
    source_kind = models.CharField(max_length=32, choices=SourceKind.choices)
    source = models.CharField(max_length=1000, help_text="model name or directory path")
    d_model = models.PositiveIntegerField()
    n_layers = models.PositiveIntegerField()
    n_ctx = models.PositiveIntegerField()
    d_vocab = models.PositiveIntegerField()
    hook_widths = models.JSONField(default=dict)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Vocabulary(models.Model):
    """Display text of every token id, kept apart so listing models never loads it."""

    language_model = models.OneToOneField(LanguageModel, on_delete=models.CASCADE, related_name="vocabulary")
    tokens = models.JSONField(default=list)

    def __str__(self) -> str:
        return f"vocabulary of {self.language_model_id}"


class Tokenizer(models.Model):
    """The model's tokenizer as the `tokenizers` library reads it, stored at registration so that the web process
    tokenizes datasets without transformers (and without the hub, for transformer-lens models)."""

    language_model = models.OneToOneField(LanguageModel, on_delete=models.CASCADE, related_name="tokenizer")
    definition = models.TextField(help_text="tokenizer.json, as tokenizers.Tokenizer.to_str() writes it")
    bos_token_id = models.IntegerField(null=True)
    eos_token_id = models.IntegerField(null=True)
    stored = models.DateTimeField(auto_now=True)  # a new registration replaces it: caches key on this

    def __str__(self) -> str:
        return f"tokenizer of {self.language_model_id}"
