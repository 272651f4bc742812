"""Reads of stored dashboards: one feature with its examples in token text, SAE feature listings, labels."""

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import psycopg
from django.conf import settings
from django.core.paginator import Page, Paginator
from django.db import connection
from django.db.models import Count, Model, Q, QuerySet

from atlas.datasets.models import Dataset
from atlas.errors import NotFound
from atlas.explanations.models import Explanation
from atlas.explanations.selectors import explanations_matching, feature_explanations
from atlas.features.models import Feature
from atlas.features.packing import StoredDashboard, StoredExample, dashboard_unpack
from atlas.lms.models import LanguageModel
from atlas.lms.selectors import tokens_text, vocabulary_for
from atlas.saes.models import DashboardRun, Sae
from atlas.saes.selectors import DENSE_FEATURE_FRACTION, FeatureCounts, run_feature_counts, sae_get

# Neuronpedia's features-offset returns this many features a call; clients page by it.
API_FEATURES_PER_OFFSET = 25


@dataclass(frozen=True)
class ExampleView:
    tokens: list[str]
    values: list[float]
    focus: int
    # For interval examples: the interval's bounds and the share of active tokens it holds; None for top ones.
    bin_min: float | None = None
    bin_max: float | None = None
    bin_contains: float | None = None

    @property
    def is_top(self) -> bool:
        return self.bin_min is None

    @property
    def value(self) -> float:
        return self.values[self.focus]

    @property
    def max_value(self) -> float:
        return max(self.values, default=0.0)

    @property
    def max_value_token_index(self) -> int:
        return self.values.index(self.max_value) if self.values else 0


@dataclass(frozen=True)
class Histogram:
    centers: list[float]
    heights: list[int]


@dataclass(frozen=True)
class FeatureView:
    sae: Sae
    feature: Feature
    top: list[ExampleView]
    intervals: list[ExampleView]
    pos_logits: list[tuple[str, float]]
    neg_logits: list[tuple[str, float]]
    act_hist: Histogram
    logit_hist: Histogram
    # Other features of the SAE with the most similar decoder directions: (index, cosine), descending.
    neighbours: list[tuple[int, float]] = field(default_factory=list)
    explanations: list[Explanation] = field(default_factory=list)


def _histogram(low: float, high: float, heights: list[int]) -> Histogram:
    width = (high - low) / len(heights) if heights else 0.0
    return Histogram(centers=[low + width * (i + 0.5) for i in range(len(heights))], heights=list(heights))


def _example_view(example: StoredExample, vocabulary: tuple[str, ...], **bounds: float) -> ExampleView:
    return ExampleView(tokens_text(vocabulary, example.token_ids), example.values, example.focus, **bounds)


def _interval_views(stored: StoredDashboard, max_act: float, vocabulary: tuple[str, ...]) -> list[ExampleView]:
    """Interval examples, the highest interval first, as the page lists them."""
    n_intervals = len(stored.intervals)
    views: list[ExampleView] = []
    for interval in reversed(range(n_intervals)):
        bounds = {
            "bin_min": max_act * interval / n_intervals,
            "bin_max": max_act * (interval + 1) / n_intervals,
            "bin_contains": stored.interval_shares[interval],
        }
        views.extend(_example_view(example, vocabulary, **bounds) for example in stored.intervals[interval])
    return views


# The hot path of the API and the feature page: the feature with its run, dataset, SAE and model, in this order,
# from one hand-written statement. Compiling the equivalent ORM query cost more than the rest of the request.
_DETAIL_MODELS: tuple[type[Model], ...] = (Feature, DashboardRun, Dataset, Sae, LanguageModel)


@lru_cache(maxsize=1)
def _feature_detail_sql() -> str:
    feature, run, dataset, sae, model = (f'"{model._meta.db_table}"' for model in _DETAIL_MODELS)
    columns = ", ".join(f't{position}."{column.column}"' for position, model in enumerate(_DETAIL_MODELS)
                        for column in model._meta.concrete_fields)
    explanation = f'"{Explanation._meta.db_table}"'
    return (
        f"SELECT {columns}, EXISTS (SELECT 1 FROM {explanation} e WHERE e.sae_id = t3.id AND e.index = t0.index) "
        f"FROM {feature} t0 JOIN {run} t1 ON t1.id = t0.run_id JOIN {dataset} t2 ON t2.id = t1.dataset_id "
        f"JOIN {sae} t3 ON t3.published_run_id = t0.run_id JOIN {model} t4 ON t4.id = t3.language_model_id "
        "WHERE t4.slug = %s AND t3.slug = %s AND t0.index = %s"
    )


def _instances(row: tuple[Any, ...]) -> list[Any]:
    """The row's columns as one instance per model of _DETAIL_MODELS, with the ORM's conversions (JSON)."""
    instances: list[Any] = []
    start = 0
    for model, (names, converters) in zip(_DETAIL_MODELS, _detail_columns(), strict=True):
        values = list(row[start:start + len(names)])
        for position, converter in converters:
            values[position] = converter(values[position], None, connection)
        instances.append(model.from_db(connection.alias, names, values))
        start += len(names)
    return instances


@lru_cache(maxsize=1)
def _detail_columns() -> list[tuple[list[str], list[tuple[int, Callable[..., Any]]]]]:
    """Per model: its columns' attribute names, and the (position, converter) pairs the ORM would apply."""
    return [
        (
            [column.attname for column in model._meta.concrete_fields],
            [(position, converter) for position, column in enumerate(model._meta.concrete_fields)
             for converter in column.get_db_converters(connection)],
        )
        for model in _DETAIL_MODELS
    ]


def feature_detail(model_slug: str, sae_slug: str, index: int) -> FeatureView:
    # A server-side prepared statement (Django's own cursors bind on the client, which cannot prepare): Postgres
    # plans it once per connection instead of on every request, when planning took several times the lookup.
    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_feature_detail_sql(), [model_slug, sae_slug, index], prepare=True)
        row = cursor.fetchone()
    if row is None:
        raise _feature_missing(model_slug, sae_slug, index)
    feature, run, dataset, sae, language_model = _instances(row)
    run.dataset, run.sae, feature.run = dataset, sae, run
    sae.language_model, sae.published_run = language_model, run
    # Most features have no label; the flag in the row spares them the query.
    explanations = feature_explanations(sae, [index]).get(index, []) if row[-1] else []
    return _feature_view(sae, feature, vocabulary_for(sae.language_model), explanations)


def _feature_missing(model_slug: str, sae_slug: str, index: int) -> NotFound:
    sae = sae_get(model_slug, sae_slug)
    if sae.published_run_id is None:
        return NotFound(f"{model_slug}/{sae_slug} has no computed dashboards yet; its page shows the run's progress.")
    return NotFound(f"{model_slug}/{sae_slug} has features 0 to {sae.d_sae - 1}; there is no feature {index}.")


def features_detail(sae: Sae, indices: Iterable[int]) -> list[FeatureView]:
    """The published features of one SAE at these indices, in index order; indices it lacks are left out."""
    wanted = sorted(set(indices))
    features = Feature.objects.filter(run_id=sae.published_run_id, index__in=wanted) if wanted else []
    explanations = feature_explanations(sae, wanted)
    vocabulary = vocabulary_for(sae.language_model)
    return [_feature_view(sae, feature, vocabulary, explanations.get(feature.index, [])) for feature in features]


@dataclass(frozen=True)
class FeatureBrief:
    """A published feature's numbers and newest label, without its dashboard: what a list of many shows."""

    sae: Sae
    feature: Feature  # index, frac_nonzero and max_act loaded
    explanation: Explanation | None


def features_brief(sae: Sae, indices: Iterable[int]) -> dict[int, FeatureBrief]:
    """The published features of one SAE at these indices, by index; indices it lacks (or an SAE with no
    published run) are left out. The dashboards are not read."""
    wanted = sorted(set(indices))
    if not wanted or sae.published_run_id is None:
        return {}
    features = Feature.objects.filter(run_id=sae.published_run_id, index__in=wanted).only("index", "frac_nonzero",
                                                                                        "max_act")
    explanations = feature_explanations(sae, wanted)
    return {feature.index: FeatureBrief(sae, feature, next(iter(explanations.get(feature.index, [])), None))
            for feature in features}


def features_offset(sae: Sae, offset: int) -> list[FeatureView]:
    """A page of features from an index on, as Neuronpedia's features-offset pages through an SAE."""
    end = offset + API_FEATURES_PER_OFFSET
    return features_detail(sae, range(offset, min(end, sae.d_sae)))


def _feature_view(sae: Sae, feature: Feature, vocabulary: tuple[str, ...],
                  explanations: list[Explanation]) -> FeatureView:
    stored = dashboard_unpack(bytes(feature.dashboard))
    return FeatureView(
        sae=sae,
        feature=feature,
        top=[_example_view(example, vocabulary) for example in stored.top],
        intervals=_interval_views(stored, feature.max_act, vocabulary),
        pos_logits=list(zip(tokens_text(vocabulary, stored.logit_top_ids), stored.logit_top_values, strict=True)),
        neg_logits=list(zip(tokens_text(vocabulary, stored.logit_bottom_ids), stored.logit_bottom_values,
                            strict=True)),
        act_hist=_histogram(0.0, feature.max_act, stored.act_hist_counts),
        logit_hist=_histogram(stored.logit_hist_min, stored.logit_hist_max, stored.logit_hist_counts),
        neighbours=list(zip(stored.neighbour_ids, stored.neighbour_cosines, strict=True)),
        explanations=explanations,
    )


class FeatureSort(StrEnum):
    INDEX = "index"
    DENSITY = "density"
    MAX_ACT = "max_act"


_SORT_COLUMNS = {FeatureSort.INDEX: "index", FeatureSort.DENSITY: "frac_nonzero", FeatureSort.MAX_ACT: "max_act"}


@dataclass(frozen=True)
class FeatureListing:
    """What the SAE page's table shows: the sort, the filters, and whether dead features are listed."""

    sort: FeatureSort = FeatureSort.INDEX
    descending: bool = False
    log_density_min: float | None = None
    log_density_max: float | None = None
    max_act_min: float | None = None
    max_act_max: float | None = None
    label: str = ""
    show_dead: bool = False


def sae_features(sae: Sae, listing: FeatureListing) -> QuerySet[Feature]:
    """Filters and a sort that the (run, column, index) indexes serve; the index breaks ties."""
    features = Feature.objects.filter(run_id=sae.published_run_id).only("index", "frac_nonzero", "max_act")
    if not listing.show_dead:
        features = features.filter(frac_nonzero__gt=0)
    if listing.log_density_min is not None:
        features = features.filter(frac_nonzero__gte=10**listing.log_density_min)
    if listing.log_density_max is not None:
        features = features.filter(frac_nonzero__lte=10**listing.log_density_max)
    if listing.max_act_min is not None:
        features = features.filter(max_act__gte=listing.max_act_min)
    if listing.max_act_max is not None:
        features = features.filter(max_act__lte=listing.max_act_max)
    if listing.label:
        features = features.filter(index__in=explanations_matching(listing.label, sae=sae).values("index"))
    columns = [_SORT_COLUMNS[listing.sort], "index"] if listing.sort != FeatureSort.INDEX else ["index"]
    return features.order_by(*(f"-{column}" if listing.descending else column for column in columns))


class _CountedPaginator(Paginator):  # type: ignore[type-arg]  # not subscriptable at run time
    """A Paginator given its count, so it need not count the rows. Knowing it, a page past the middle is read
    from the far end in the reverse order (the index breaks ties, so that order is the exact mirror): an OFFSET
    walks the index up to the page, so no page then walks more than half of it (the last page, none)."""

    def __init__(self, object_list: QuerySet[Feature], per_page: int, count: int) -> None:
        super().__init__(object_list, per_page)
        self.features, self.known_count = object_list, count

    @property
    def count(self) -> int:
        return self.known_count

    def page(self, number: int | str) -> Page[Feature]:
        number = self.validate_number(number)
        bottom = (number - 1) * self.per_page
        top = self.count if bottom + self.per_page + self.orphans >= self.count else bottom + self.per_page
        if bottom <= self.count - top:
            return Page(self.features[bottom:top], number, self)
        mirrored = self.features.reverse()[self.count - top:self.count - bottom]
        return Page(list(reversed(mirrored)), number, self)


def _listing_count(sae: Sae, listing: FeatureListing) -> int | None:
    """How many features the listing holds, from the counts stored with the run when it filters nothing but
    (perhaps) the dead ones; None when it must be counted."""
    counts = run_feature_counts(sae.published_run) if sae.published_run is not None else None
    plain = FeatureListing(sort=listing.sort, descending=listing.descending, show_dead=listing.show_dead)
    if counts is None or listing != plain:
        return None
    return counts.total if listing.show_dead else counts.total - counts.dead


def sae_features_page(sae: Sae, listing: FeatureListing, page_number: int | str | None) -> Page[Feature]:
    features, per_page = sae_features(sae, listing), settings.ATLAS_FEATURES_PER_PAGE
    count = _listing_count(sae, listing)
    paginator = Paginator(features, per_page) if count is None else _CountedPaginator(features, per_page, count)
    return paginator.get_page(page_number)


def feature_list_query(sae: Sae, index: int) -> str:
    """The SAE page's query string for the default listing page (by index, dead hidden) that holds this feature.
    It counts the live features before it, so the feature page links to it through ?around= and the count runs
    only when someone follows the link."""
    per_page = settings.ATLAS_FEATURES_PER_PAGE
    features = Feature.objects.filter(run_id=sae.published_run_id)
    frac_nonzero = features.filter(index=index).values_list("frac_nonzero", flat=True).first()
    if frac_nonzero is None:
        return ""
    if frac_nonzero <= 0:
        return urlencode({"dead": "on", "page": index // per_page + 1})
    before = features.filter(frac_nonzero__gt=0, index__lt=index).count()
    return urlencode({"page": before // per_page + 1})


def feature_random_index(sae: Sae) -> int:
    """A live feature's index: the first live one at or after a random index, wrapping round to the start."""
    live = Feature.objects.filter(run_id=sae.published_run_id, frac_nonzero__gt=0).order_by("index")
    start = random.randrange(sae.d_sae)
    index = live.filter(index__gte=start).values_list("index", flat=True).first()
    if index is None:
        index = live.values_list("index", flat=True).first()
    if index is None:
        raise NotFound(f"{sae} has no live features to pick from.")
    return index


def feature_counts_from_rows(run_id: int) -> FeatureCounts:
    """Count the run's dead and dense features in its rows (once, when it is published)."""
    counts = Feature.objects.filter(run_id=run_id).aggregate(
        total=Count("pk"),
        dead=Count("pk", filter=Q(frac_nonzero=0)),
        dense=Count("pk", filter=Q(frac_nonzero__gt=DENSE_FEATURE_FRACTION)),
    )
    return FeatureCounts(dead=counts["dead"], dense=counts["dense"], total=counts["total"])
