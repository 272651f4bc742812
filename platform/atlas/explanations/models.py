"""People's short descriptions of what features do, searchable by Postgres full-text search."""

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVector
from django.db import models

from atlas.saes.models import Sae

# The text-search configuration explanations are indexed and searched with; the two must match for the
# GIN index to serve searches.
SEARCH_CONFIG = "english"
DESCRIPTION_MAX_LENGTH = 500


class Explanation(models.Model):
    """A person's short description of what a feature does.

    Keyed by (SAE, feature index) rather than by a run's Feature row, so labels survive re-running the dashboards.
    """

    sae = models.ForeignKey(Sae, on_delete=models.CASCADE, related_name="explanations", db_index=False)
    index = models.IntegerField()
    description = models.CharField(max_length=DESCRIPTION_MAX_LENGTH)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL,
                               related_name="explanations")
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]
        indexes = [
            models.Index(fields=["sae", "index"], name="explanation_feature"),
            GinIndex(SearchVector("description", config=SEARCH_CONFIG), name="explanation_search"),
        ]

    def __str__(self) -> str:
        return f"{self.sae_id}/{self.index}: {self.description}"
