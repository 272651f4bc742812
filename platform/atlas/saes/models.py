"""An uploaded SAE attached to a model and hook point, and the runs that compute its dashboards."""

from pathlib import Path

from django.conf import settings
from django.db import models

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from workers.compute.params import DashboardParams


class TaskStatus(models.TextChoices):
    """Where a run, a shard of it, or its metrics stand."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    # Stopped by its owner (or staff): its workers stop at their next progress report.
    CANCELLED = "cancelled"


# A run, shard or metrics in one of these states is done with: nothing more is computed for it.
FINISHED_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED})


class Sae(models.Model):
    language_model = models.ForeignKey(LanguageModel, on_delete=models.PROTECT, related_name="saes")
    # The Neuronpedia source id (its API calls it `layer`), e.g. "5-res-demo".
    slug = models.SlugField(max_length=100)
    hook_name = models.CharField(max_length=200)
    layer = models.IntegerField(null=True, blank=True)
    architecture = models.CharField(max_length=50)
    d_in = models.PositiveIntegerField()
    d_sae = models.PositiveIntegerField()
    cfg = models.JSONField(default=dict)
    description = models.TextField(blank=True)
    files_dir = models.CharField(max_length=500, help_text="directory under MEDIA_ROOT")
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created = models.DateTimeField(auto_now_add=True)
    # The run whose results pages show; switched in the same transaction that writes them.
    published_run = models.ForeignKey(
        "DashboardRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["language_model__slug", "slug"]
        constraints = [models.UniqueConstraint(fields=["language_model", "slug"], name="unique_sae_per_model")]

    def __str__(self) -> str:
        return f"{self.language_model.slug}/{self.slug}"

    @property
    def files_path(self) -> Path:
        return Path(settings.MEDIA_ROOT) / self.files_dir


class DashboardRun(models.Model):
    Status = TaskStatus

    sae = models.ForeignKey(Sae, on_delete=models.CASCADE, related_name="runs")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="runs")
    n_sequences = models.PositiveIntegerField()
    # Every DashboardParams field (DashboardParams.as_json): the worker computes with these, never with today's
    # defaults, so a run queued before a default changes still finishes as it started.
    params = models.JSONField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    phase = models.CharField(max_length=50, blank=True)
    progress_done = models.BigIntegerField(default=0)
    progress_total = models.BigIntegerField(default=0)
    tokens_total = models.BigIntegerField()
    # Set once, when the last shard finishes, so that the merge is queued exactly once.
    merge_queued = models.BooleanField(default=False)
    # The merge's tries, and the heartbeat of the worker computing it (workers recover a merge whose worker died).
    merge_attempts = models.PositiveSmallIntegerField(default=0)
    merge_heartbeat = models.DateTimeField(null=True, blank=True)
    merge_worker = models.CharField(max_length=200, blank=True)
    # What happened to the run that its page should say, oldest first: [{"at": ISO time, "message": str}].
    events = models.JSONField(default=list, blank=True)
    device = models.CharField(max_length=50, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    # Counted once, when the run is published, so the SAE page need not count 100,000 rows on every view;
    # None until then. Dense: active on more than saes.selectors.DENSE_FEATURE_FRACTION of the tokens.
    features_total = models.PositiveIntegerField(null=True, blank=True)
    features_dead = models.PositiveIntegerField(null=True, blank=True)
    features_dense = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"run {self.pk} of {self.sae} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def dashboard_params(self) -> DashboardParams:
        return DashboardParams.from_json(self.params)


class DashboardShard(models.Model):
    """A contiguous range of a run's sequences, computed by one worker task; the run merges them all."""

    Status = TaskStatus

    run = models.ForeignKey(DashboardRun, on_delete=models.CASCADE, related_name="shards")
    index = models.PositiveIntegerField()
    first_seq = models.PositiveIntegerField()
    n_seqs = models.PositiveIntegerField()
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    progress_done = models.BigIntegerField(default=0)
    device = models.CharField(max_length=50, blank=True)
    # The Celery worker (hostname) computing the shard, and when it last said it was alive.
    worker = models.CharField(max_length=200, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="unique_shard_per_run")]

    def __str__(self) -> str:
        return f"shard {self.index} of run {self.run_id} ({self.status})"

    @property
    def stop_seq(self) -> int:
        return self.first_seq + self.n_seqs


class RunMetrics(models.Model):
    """Quality metrics of a run's SAE on the first sequences of its dataset (workers.compute.metrics defines them).

    Computed by a task of their own, so that their failure never fails the dashboards; null until computed.
    """

    Status = TaskStatus

    run = models.OneToOneField(DashboardRun, on_delete=models.CASCADE, related_name="metrics")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    device = models.CharField(max_length=50, blank=True)
    worker = models.CharField(max_length=200, blank=True)
    heartbeat = models.DateTimeField(null=True, blank=True)
    n_sequences = models.PositiveIntegerField(null=True, blank=True)
    n_tokens = models.BigIntegerField(null=True, blank=True)
    l0 = models.FloatField(null=True, blank=True)
    explained_variance = models.FloatField(null=True, blank=True)
    mse = models.FloatField(null=True, blank=True)
    cosine_similarity = models.FloatField(null=True, blank=True)
    ce_loss_clean = models.FloatField(null=True, blank=True)
    ce_loss_with_sae = models.FloatField(null=True, blank=True)
    ce_loss_zero_ablation = models.FloatField(null=True, blank=True)
    ce_loss_score = models.FloatField(null=True, blank=True)
    kl_div_with_sae = models.FloatField(null=True, blank=True)
    kl_div_zero_ablation = models.FloatField(null=True, blank=True)
    kl_div_score = models.FloatField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"metrics of run {self.run_id} ({self.status})"


class RunAnomalyDistribution(models.Model):
    """A published run's own distribution of the anomaly scores (workers.compute.anomaly defines them), over the
    first sequences of its dataset: quantile tables that live text's scores are read against as percentiles.

    Computed by a task of its own, queued when the run publishes (the scores need the run's feature densities);
    tables null until then.
    """

    Status = TaskStatus

    run = models.OneToOneField(DashboardRun, on_delete=models.CASCADE, related_name="anomaly_distribution")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    n_sequences = models.PositiveIntegerField(null=True, blank=True)
    n_tokens = models.BigIntegerField(null=True, blank=True)
    # QUANTILES floats each, ascending: the 0 %, 0.1 %, ..., 100 % quantiles of the sample's scores.
    reconstruction_error_quantiles = models.JSONField(null=True, blank=True)
    rarity_quantiles = models.JSONField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"anomaly distribution of run {self.run_id} ({self.status})"
