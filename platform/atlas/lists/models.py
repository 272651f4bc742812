"""A feature list: a name, a description and an owner, public or private, holding features of any SAEs in the
order they were added, each with its owner's note. Its id is a random permalink id, as Neuronpedia's lists have."""

from django.conf import settings
from django.db import models

from atlas.saes.models import Sae
from atlas.steering.models import OUTPUT_ID_LENGTH, output_id_new

NAME_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 5000
NOTE_MAX_LENGTH = 2000
# What one list holds at most, and what one add-features call may send: a list page shows each one's example.
LIST_FEATURES_MAX = 1000


class FeatureList(models.Model):
    id = models.CharField(primary_key=True, max_length=OUTPUT_ID_LENGTH, default=output_id_new, editable=False)
    name = models.CharField(max_length=NAME_MAX_LENGTH)
    description = models.TextField(blank=True, max_length=DESCRIPTION_MAX_LENGTH)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="feature_lists")
    # Public lists are for anyone with the link; a private one is its owner's alone (a 404 to anyone else).
    public = models.BooleanField(default=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "id"]

    def __str__(self) -> str:
        return f"list {self.name} ({self.id})"


class ListItem(models.Model):
    feature_list = models.ForeignKey(FeatureList, on_delete=models.CASCADE, related_name="items")
    sae = models.ForeignKey(Sae, on_delete=models.CASCADE, related_name="list_items")
    index = models.PositiveIntegerField()
    note = models.TextField(blank=True, max_length=NOTE_MAX_LENGTH)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created", "pk"]
        constraints = [models.UniqueConstraint(fields=["feature_list", "sae", "index"], name="unique_list_feature")]

    def __str__(self) -> str:
        return f"{self.sae}/{self.index} in {self.feature_list_id}"
