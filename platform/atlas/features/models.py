"""One row per feature of a run, plus its examples; token ids are stored, text comes from the vocabulary."""

from django.contrib.postgres.fields import ArrayField
from django.db import models

from atlas.saes.models import DashboardRun


class Feature(models.Model):
    run = models.ForeignKey(DashboardRun, on_delete=models.CASCADE, related_name="features")
    index = models.IntegerField()
    frac_nonzero = models.FloatField()
    max_act = models.FloatField()
    # Equal-width bins over (0, max_act]; the edges follow from max_act and the count.
    act_hist_counts = ArrayField(models.BigIntegerField())
    logit_pos_ids = ArrayField(models.IntegerField())
    logit_pos_values = ArrayField(models.FloatField())
    logit_neg_ids = ArrayField(models.IntegerField())
    logit_neg_values = ArrayField(models.FloatField())
    # Equal-width bins over [logit_hist_min, logit_hist_max].
    logit_hist_counts = ArrayField(models.BigIntegerField())
    logit_hist_min = models.FloatField()
    logit_hist_max = models.FloatField()

    class Meta:
        ordering = ["index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="unique_feature_per_run")]

    def __str__(self) -> str:
        return f"feature {self.index} of run {self.run_id}"


class FeatureExample(models.Model):
    class Kind(models.IntegerChoices):
        TOP = 0
        INTERVAL = 1

    feature = models.ForeignKey(Feature, on_delete=models.CASCADE, related_name="examples")
    kind = models.SmallIntegerField(choices=Kind.choices)
    rank = models.SmallIntegerField()
    # For interval examples: the interval's bounds and the share of active tokens it holds.
    bin_min = models.FloatField(null=True)
    bin_max = models.FloatField(null=True)
    bin_contains = models.FloatField(null=True)
    token_ids = ArrayField(models.IntegerField())
    values = ArrayField(models.FloatField())
    # Index in token_ids of the token the example was chosen for.
    focus = models.SmallIntegerField()
    value = models.FloatField()

    class Meta:
        ordering = ["kind", "-bin_min", "rank"]
        indexes = [models.Index(fields=["feature", "kind"])]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} example {self.rank} of feature {self.feature_id}"
