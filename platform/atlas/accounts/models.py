"""API keys: one user may hold several, named, each stored only as a hash."""

from django.conf import settings
from django.db import models


class ApiKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    # The key's first characters, shown on the account page so a person can tell their keys apart.
    prefix = models.CharField(max_length=16)
    # SHA-256 of the key: keys are long random tokens, so a fast hash cannot be brute-forced back to one.
    digest = models.CharField(max_length=64, unique=True)
    created = models.DateTimeField(auto_now_add=True)
    last_used = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"{self.prefix}… of {self.user_id}"
