"""A stored vector: a direction at one residual-stream hook of a model, as float32 values, with its owner's label.

Its Neuronpedia address is (model, source, index): the source is `<layer>-vectors-<resid-pre|resid-post>` (one per
model, layer and hook, a name SAE uploads may not take) and the index is the row's id, which Postgres never hands
out twice, so a deleted vector's address never comes to name another."""

import re

import numpy as np
from django.conf import settings
from django.db import models

from atlas.lms.models import LanguageModel

# Neuronpedia's limits: at most this many values, a default strength within ±300 (its STEER_STRENGTH_MAX).
VECTOR_MAX_LENGTH = 24576
STRENGTH_LIMIT = 300.0
LABEL_MAX_LENGTH = 200
# Neuronpedia's default when a vector names none.
DEFAULT_STRENGTH = 10.0
# The hooks a vector may sit at, as the client names them, and each one's part of the source id.
HOOK_SOURCE_SUFFIX = {"hook_resid_pre": "resid-pre", "hook_resid_post": "resid-post"}
VECTOR_SOURCE_PATTERN = re.compile(r"^(?P<layer>\d+)-vectors-(?P<hook>resid-pre|resid-post)$")
VALUES_DTYPE = np.dtype("<f4")


def vector_source_id(layer: int, hook_type: str) -> str:
    return f"{layer}-vectors-{HOOK_SOURCE_SUFFIX[hook_type]}"


class Vector(models.Model):
    class HookType(models.TextChoices):
        RESID_PRE = "hook_resid_pre", "residual stream before the block"
        RESID_POST = "hook_resid_post", "residual stream after the block"

    language_model = models.ForeignKey(LanguageModel, on_delete=models.CASCADE, related_name="vectors")
    layer = models.PositiveIntegerField()
    hook_type = models.CharField(max_length=20, choices=HookType.choices)
    label = models.CharField(max_length=LABEL_MAX_LENGTH)
    # float32, little-endian: what the model computes in, read back bit for bit with numpy.frombuffer.
    values = models.BinaryField()
    default_strength = models.FloatField(default=DEFAULT_STRENGTH)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="vectors")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-pk"]
        indexes = [models.Index(fields=["language_model", "layer", "hook_type"], name="vector_source")]

    def __str__(self) -> str:
        return f"{self.language_model.slug}/{self.source}/{self.pk}"

    @property
    def source(self) -> str:
        return vector_source_id(self.layer, self.hook_type)

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.{self.hook_type}"

    def values_array(self) -> np.ndarray:
        """The stored values, shape [d_model], float32."""
        return np.frombuffer(bytes(self.values), dtype=VALUES_DTYPE)
