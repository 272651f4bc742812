"""A stored steer: the request as it was asked (settings), what the worker answered (both completions with their
log-probs), under the hash of every input, so an identical request is answered from here and costs nothing."""

import secrets

from django.conf import settings
from django.db import models

from atlas.lms.models import LanguageModel

OUTPUT_ID_LENGTH = 12
# Part of the hash: bump it whenever what a request computes changes, so older rows stop answering new requests.
STEER_VERSION = 1
# (Read here, as the model's `settings` field shadows the name inside the class.)
USER_MODEL = settings.AUTH_USER_MODEL


def output_id_new() -> str:
    """A permalink id: 12 characters of [a-z0-9], 62 bits, unguessable enough for a result anyone may read."""
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(OUTPUT_ID_LENGTH))


class SteerOutput(models.Model):
    class Kind(models.TextChoices):
        COMPLETION = "completion", "completion of a prompt"
        CHAT = "chat", "chat reply under the model's chat template"

    id = models.CharField(primary_key=True, max_length=OUTPUT_ID_LENGTH, default=output_id_new, editable=False)
    # sha256 of the canonical request (STEER_VERSION, model, prompt or messages, each direction by its row id and
    # strength, every sampling parameter): see atlas.steering.services.steer_key.
    key = models.CharField(max_length=64, unique=True)
    kind = models.CharField(max_length=12, choices=Kind.choices)
    language_model = models.ForeignKey(LanguageModel, on_delete=models.CASCADE, related_name="steer_outputs")
    # The request as its JSON fields name it, features as sent (modelId, layer, index, strength): what /steer/<id>
    # reopens the page with.
    settings = models.JSONField()
    # The worker's answer: promptTokenIds, then default and steered, each {text, tokens: [{token, tokenId, logprob,
    # topLogprobs}]} (chat: the rendered prompt of each side too).
    answer = models.JSONField()
    creator = models.ForeignKey(USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                related_name="steer_outputs")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"steer {self.id} on {self.language_model.slug}"
