"""A concept search (positive and negative texts, the SAEs and pooling asked for, and what the worker answered), and
a detector saved from one (a linear score over chosen features or a probe direction, with its threshold and its
evaluation on the search's held-out texts)."""

from typing import Any

from django.conf import settings
from django.db import models

from atlas.lms.models import LanguageModel
from atlas.saes.models import Sae, TaskStatus
from atlas.steering.models import OUTPUT_ID_LENGTH, output_id_new

USER_MODEL = settings.AUTH_USER_MODEL


class Pooling(models.TextChoices):
    MAX = "max", "max over tokens"
    MEAN = "mean", "mean over tokens"


class ConceptSearch(models.Model):
    id = models.CharField(primary_key=True, max_length=OUTPUT_ID_LENGTH, default=output_id_new, editable=False)
    language_model = models.ForeignKey(LanguageModel, on_delete=models.CASCADE, related_name="concept_searches")
    # The SAEs searched, in the order asked (ids; a deleted SAE's results stay, its features unlinked).
    sae_ids = models.JSONField()
    pooling = models.CharField(max_length=8, choices=Pooling.choices)
    positives = models.JSONField()  # list[str], in the order given
    negatives = models.JSONField()  # list[str]; the dataset's sequences come after them when one is named
    dataset = models.ForeignKey("datasets.Dataset", null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="concept_searches")
    dataset_negatives = models.PositiveIntegerField(default=0)
    dataset_tokens = models.PositiveIntegerField(default=0)  # tokens of each dataset sequence used
    status = models.CharField(max_length=12, choices=TaskStatus.choices, default=TaskStatus.QUEUED)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # Per SAE, in the order asked: workers.concepts._result_payload.
    results = models.JSONField(default=list)
    creator = models.ForeignKey(USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="concept_searches")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"concept search {self.id} on {self.language_model.slug}"

    @property
    def n_texts(self) -> int:
        return len(self.positives) + len(self.negatives) + self.dataset_negatives

    @property
    def request(self) -> dict[str, Any]:
        """What the worker runs (workers.concepts)."""
        return {"sae_ids": self.sae_ids, "positives": self.positives, "negatives": self.negatives,
                "pooling": self.pooling, "dataset_id": self.dataset_id, "dataset_negatives": self.dataset_negatives,
                "dataset_tokens": self.dataset_tokens}


class Detector(models.Model):
    class Kind(models.TextChoices):
        FEATURES = "features", "weighted SAE features"
        PROBE = "probe", "probe direction at the hook"

    id = models.CharField(primary_key=True, max_length=OUTPUT_ID_LENGTH, default=output_id_new, editable=False)
    name = models.CharField(max_length=200)
    sae = models.ForeignKey(Sae, on_delete=models.CASCADE, related_name="detectors")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    pooling = models.CharField(max_length=8, choices=Pooling.choices)
    features = models.JSONField(default=list)  # list[int]; empty for a probe
    weights = models.JSONField()  # list[float]: one per feature, or the probe's direction [d_in]
    bias = models.FloatField(default=0.0)
    threshold = models.FloatField(default=0.0)
    # On the search's held-out texts: workers.concepts.evaluation_payload.
    evaluation = models.JSONField(default=dict)
    search = models.ForeignKey(ConceptSearch, null=True, blank=True, on_delete=models.SET_NULL,
                               related_name="detectors")
    owner = models.ForeignKey(USER_MODEL, on_delete=models.CASCADE, related_name="detectors")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"detector {self.name} ({self.id})"

    @property
    def spec(self) -> dict[str, Any]:
        """What the worker applies (workers.concepts.detect_answer), less the texts."""
        return {"sae_id": self.sae_id, "kind": self.kind, "pooling": self.pooling, "features": self.features,
                "weights": self.weights, "bias": self.bias, "threshold": self.threshold}
