"""Reads of SAEs and their runs: lookups by address, listings, run progress and quality metrics."""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser, User

from atlas.datasets.models import Dataset
from atlas.errors import NotFound
from atlas.lms.models import LanguageModel
from atlas.saes.models import FINISHED_STATUSES, DashboardRun, DashboardShard, RunMetrics, Sae
from atlas.vectors.models import Vector
from workers.compute.vector_sae import VECTORS_KEY, VectorSaeEntry, vector_sae_entries

# A feature active on more than this share of the run's tokens is dense (Neuronpedia's and SAELens's 10%).
DENSE_FEATURE_FRACTION = 0.1


@dataclass(frozen=True)
class FeatureCounts:
    """Features never active on the run's tokens, and those active on more than DENSE_FEATURE_FRACTION."""

    dead: int
    dense: int
    total: int  # features stored for the run


@dataclass(frozen=True)
class RunMetricsView:
    run: DashboardRun
    metrics: RunMetrics | None  # None for a run recorded before metrics existed
    # None until the run's dashboards are published: the counts come from their densities.
    feature_counts: FeatureCounts | None


def run_feature_counts(run: DashboardRun) -> FeatureCounts | None:
    """The counts stored when the run was published; None for a run not published."""
    if run.features_total is None or run.features_dead is None or run.features_dense is None:
        return None
    return FeatureCounts(dead=run.features_dead, dense=run.features_dense, total=run.features_total)


def run_metrics_view(run: DashboardRun) -> RunMetricsView:
    return RunMetricsView(
        run=run, metrics=RunMetrics.objects.filter(run=run).first(), feature_counts=run_feature_counts(run)
    )


def sae_metrics_view(sae: Sae) -> RunMetricsView | None:
    """The metrics of the run whose dashboards the SAE's pages show, or of its newest run before any is published."""
    run = sae.published_run or sae.runs.order_by("-created").first()
    return None if run is None else run_metrics_view(run)


def sae_get(model_slug: str, sae_slug: str) -> Sae:
    sae = (
        Sae.objects.select_related("language_model", "published_run__dataset")
        .filter(language_model__slug=model_slug, slug=sae_slug)
        .first()
    )
    if sae is None:
        if not LanguageModel.objects.filter(slug=model_slug).exists():
            raise NotFound(f"No model '{model_slug}'. The home page lists the models this server has.")
        raise NotFound(f"Model '{model_slug}' has no SAE '{sae_slug}'.")
    return sae


def saes_named(model_slug: str, slugs: list[str] | None, field: str = "layers") -> list[Sae]:
    """The model's SAEs named in slugs (each once, in the order named), or all of them by slug; NotFound names the
    model or the entry of `field` it lacks."""
    if not LanguageModel.objects.filter(slug=model_slug).exists():
        raise NotFound(f"'modelId' names no model: No model '{model_slug}'. The home page lists the models this "
                       "server has.")
    if slugs is None:
        return list(Sae.objects.select_related("language_model").filter(language_model__slug=model_slug)
                    .order_by("slug"))
    saes: dict[str, Sae] = {}
    for position, slug in enumerate(slugs):
        if slug in saes:
            continue
        try:
            saes[slug] = sae_get(model_slug, slug)
        except NotFound as error:
            raise NotFound(f"'{field}[{position}]' names no SAE of the model: {error}") from error
    return list(saes.values())


def saes_list() -> list[Sae]:
    return list(Sae.objects.select_related("language_model").order_by("language_model__slug", "slug"))


def saes_of_source_set(model_slug: str, source_set: str) -> list[Sae]:
    """A model's SAEs in a Neuronpedia source set: `5-res-jb` is layer 5 of set `res-jb`; an exact slug counts too."""
    saes = Sae.objects.select_related("language_model").filter(language_model__slug=model_slug).order_by("slug")
    return [sae for sae in saes if sae.slug == source_set or sae.slug.endswith(f"-{source_set}")]


def saes_with_latest_run() -> list[tuple[Sae, DashboardRun | None]]:
    """Every SAE with its newest run, in two queries."""
    saes = Sae.objects.select_related("language_model").prefetch_related("runs").order_by(
        "language_model__slug", "slug"
    )
    return [(sae, max(sae.runs.all(), key=lambda run: run.created, default=None)) for sae in saes]


def sae_latest_run(sae: Sae) -> DashboardRun | None:
    return sae.runs.select_related("dataset").order_by("-created").first()


def run_get(run_id: int) -> DashboardRun:
    run = DashboardRun.objects.filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"No run {run_id}.")
    return run


def run_shards(run: DashboardRun) -> list[DashboardShard]:
    return list(run.shards.order_by("index"))


def sae_may_manage(sae: Sae, user: User | AnonymousUser) -> bool:
    """Whether user may cancel the SAE's runs, run it again or delete it: its uploader, or staff."""
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_staff or (sae.uploaded_by_id is not None and sae.uploaded_by_id == user.pk)


def run_unfinished(run_id: int) -> bool:
    """Whether the run is still being computed: not finished (succeeded, failed, cancelled) nor deleted."""
    return DashboardRun.objects.filter(pk=run_id).exclude(status__in=FINISHED_STATUSES).exists()


def sae_run_get(sae: Sae, run_id: int) -> DashboardRun:
    run = sae.runs.filter(pk=run_id).first()
    if run is None:
        raise NotFound(f"{sae} has no run {run_id}; its page lists its newest run.")
    return run


@dataclass(frozen=True)
class SaeHoldings:
    """What deleting an SAE would remove, for the page that asks to confirm it."""

    runs: int
    features: int  # those of its published run: the rows of the runs it replaced are gone already
    explanations: int


def sae_holdings(sae: Sae) -> SaeHoldings:
    published = sae.published_run
    return SaeHoldings(runs=sae.runs.count(), features=(published.features_total or 0) if published else 0,
                       explanations=sae.explanations.count())


# Vectors' dashboards (services.vector_dashboard_start): a set of vectors of one hook stored as an SAE whose feature i
# is vector i, under an id of this shape, which no upload may take.
VECTOR_DASHBOARD_SLUG_PATTERN = re.compile(r"^\d+-vectors-\d+(?:-\d+)*-dash$")


def vector_dashboard_slug(layer: int, vector_ids: Sequence[int]) -> str:
    """`5-vectors-12-dash` for vector 12 at layer 5; `5-vectors-12-13-dash` for the set of 12 and 13."""
    return f"{layer}-vectors-{'-'.join(str(vector_id) for vector_id in vector_ids)}-dash"


def vector_dashboard_slug_reserved(slug: str) -> bool:
    return VECTOR_DASHBOARD_SLUG_PATTERN.match(slug) is not None


@dataclass(frozen=True)
class FeatureVector:
    """The vector whose dashboard a vector SAE's feature is: as the SAE's cfg lists it, and its row while it exists."""

    entry: VectorSaeEntry
    vector: Vector | None  # None once the vector is deleted; its dashboard stays


def sae_feature_vector(sae: Sae, index: int) -> FeatureVector | None:
    """The vector of feature index, for an SAE made of vectors; None for any other SAE."""
    entries = vector_sae_entries(sae.cfg)
    if entries is None or not 0 <= index < len(entries):
        return None
    entry = entries[index]
    vector = Vector.objects.select_related("language_model").filter(pk=entry.id,
                                                                    language_model_id=sae.language_model_id).first()
    return FeatureVector(entry=entry, vector=vector)


@dataclass(frozen=True)
class VectorDashboard:
    """An SAE holding the vector's dashboard: the vector is its feature `index`; its newest run, if any."""

    sae: Sae
    index: int
    run: DashboardRun | None


def vector_dashboards(vector: Vector) -> list[VectorDashboard]:
    """Every SAE computing or holding the vector's dashboard, newest first."""
    listing_it = {f"cfg__{VECTORS_KEY}__contains": [{"id": vector.pk}]}  # jsonb @>: a list entry with this id
    saes = (Sae.objects.select_related("language_model")
            .filter(language_model_id=vector.language_model_id, **listing_it).order_by("-created"))
    dashboards = []
    for sae in saes:
        entries = vector_sae_entries(sae.cfg) or []
        index = next(position for position, entry in enumerate(entries) if entry.id == vector.pk)
        dashboards.append(VectorDashboard(sae=sae, index=index, run=sae_latest_run(sae)))
    return dashboards


def vector_dashboard_datasets(vector: Vector) -> list[Dataset]:
    """The datasets a vector's dashboard may be computed on: its model's, newest first."""
    return list(Dataset.objects.filter(language_model_id=vector.language_model_id).order_by("-created", "-pk"))


def vector_dashboard_dataset(vector: Vector, slug: str | None) -> Dataset:
    """The dataset named slug (any model's: the service refuses another model's with its reason), or without one
    the vector's model's newest."""
    if slug is None:
        newest = next(iter(vector_dashboard_datasets(vector)), None)
        if newest is None:
            raise NotFound(f"{vector.language_model.slug} has no dataset to compute a dashboard on; add one at "
                           "/datasets/new/.")
        return newest
    dataset = Dataset.objects.select_related("language_model").filter(slug=slug).first()
    if dataset is None:
        raise NotFound(f"No dataset '{slug}'; the home page lists the datasets this server has.")
    return dataset
