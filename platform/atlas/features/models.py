"""One row per feature of a run; its examples, logit tables and histograms are packed into one blob."""

from django.db import models

from atlas.saes.models import DashboardRun


class Feature(models.Model):
    # The unique (run, index) constraint's index serves lookups by run, so the FK needs none of its own.
    run = models.ForeignKey(DashboardRun, on_delete=models.CASCADE, related_name="features", db_index=False)
    index = models.IntegerField()
    frac_nonzero = models.FloatField()
    max_act = models.FloatField()
    # Laid out as atlas.features.packing describes; token ids are stored, text comes from the vocabulary.
    dashboard = models.BinaryField()

    class Meta:
        ordering = ["index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="unique_feature_per_run")]
        # The SAE page filters by run and sorts by one of these; the index breaks ties so pages are stable.
        indexes = [
            models.Index(fields=["run", "frac_nonzero", "index"], name="feature_run_density"),
            models.Index(fields=["run", "max_act", "index"], name="feature_run_max_act"),
        ]

    def __str__(self) -> str:
        return f"feature {self.index} of run {self.run_id}"
