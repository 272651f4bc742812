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
        # The SAE page lists a run's features by index, density or max activation (the index breaks ties, so
        # pages are stable), hiding dead ones. Each index carries every column the listing reads, so a page deep
        # into 100,000 features, and its count, are index-only scans that never touch the dashboards.
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="unique_feature_per_run",
                                    include=["id", "frac_nonzero", "max_act"]),
        ]
        indexes = [
            models.Index(fields=["run", "frac_nonzero", "index"], name="feature_run_density",
                         include=["id", "max_act"]),
            models.Index(fields=["run", "max_act", "index"], name="feature_run_max_act",
                         include=["id", "frac_nonzero"]),
        ]

    def __str__(self) -> str:
        return f"feature {self.index} of run {self.run_id}"
