"""The SAE page's feature table: sorts, filters, dead features hidden, log density, random and jump links."""

import importlib
import re
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from atlas.explanations.models import Explanation
from atlas.features.models import Feature
from atlas.features.selectors import FeatureListing, FeatureSort, sae_features, sae_features_page
from atlas.saes.models import DashboardRun, Sae

PAGE = "/tiny-llama/0-res-8/"


def listed(**params: str) -> list[int]:
    page = Client().get(PAGE, params).content.decode()
    return [int(index) for index in re.findall(r'<td><a href="/tiny-llama/0-res-8/(\d+)">', page)]


def test_dead_features_are_hidden_by_default(listed_features: Sae) -> None:
    assert listed() == [3, 4, 5, 6, 7]


def test_show_dead_lists_every_feature(listed_features: Sae) -> None:
    assert listed(dead="on") == list(range(8))


@pytest.mark.parametrize(
    ("sort", "order", "expected"),
    [
        ("density", "desc", [6, 3, 5, 4, 7]),
        ("density", "asc", [7, 4, 5, 3, 6]),
        ("max_act", "desc", [4, 7, 3, 6, 5]),
        ("index", "desc", [7, 6, 5, 4, 3]),
    ],
)
def test_sorts_by_density_max_activation_and_index(listed_features: Sae, sort: str, order: str,
                                                   expected: list[int]) -> None:
    assert listed(sort=sort, order=order) == expected


def test_filters_by_log_density_and_max_activation(listed_features: Sae) -> None:
    assert listed(density_min="-3", density_max="-0.5") == [3, 5]
    assert listed(act_min="3", act_max="8") == [3, 7]


def test_filters_by_label(listed_features: Sae) -> None:
    Explanation.objects.create(sae=listed_features, index=5, description="words about happiness and joy")
    Explanation.objects.create(sae=listed_features, index=6, description="closing brackets")
    assert listed(label="happy") == [5]


def test_an_invalid_filter_is_reported_and_ignored(listed_features: Sae) -> None:
    page = Client().get(PAGE, {"act_min": "lots"}).content.decode()
    assert "Enter a number" in page
    assert listed(act_min="lots") == [3, 4, 5, 6, 7]


def test_density_is_shown_as_log10_with_a_bar(listed_features: Sae) -> None:
    page = Client().get(PAGE, {"dead": "on"}).content.decode()
    assert '<span class="number">-2.00</span>' in page
    assert 'style="width:71.4%"' in page  # log10 0.01 = -2, on a bar from -7 to 0
    assert '<span class="number">dead</span>' in page


def test_sort_links_keep_the_filters(listed_features: Sae) -> None:
    page = Client().get(PAGE, {"act_min": "1", "sort": "density", "order": "desc"}).content.decode()
    assert "act_min=1" in re.search(r'<a href="([^"]*sort=max_act[^"]*)"', page).group(1)  # type: ignore[union-attr]


def test_random_redirects_to_a_live_feature(listed_features: Sae) -> None:
    for _ in range(10):
        response = Client().get(f"{PAGE}random")
        assert response.status_code == 302
        assert int(response["Location"].rsplit("/", 1)[1]) in {3, 4, 5, 6, 7}


def test_random_without_live_features_is_404(listed_features: Sae) -> None:
    listed_features.published_run.features.update(frac_nonzero=0.0)  # type: ignore[union-attr]
    assert Client().get(f"{PAGE}random").status_code == 404


def test_jump_to_an_index_opens_its_page(listed_features: Sae) -> None:
    response = Client().get(PAGE, {"index": "6"})
    assert (response.status_code, response["Location"]) == (302, "/tiny-llama/0-res-8/6")


# Two features a page: 3 to 5 are the live ones before 6, and with dead ones shown feature 2 is on page 2.
@pytest.mark.parametrize(("index", "listing"), [(1, "?dead=on&page=1"), (2, "?dead=on&page=2"), (6, "?page=2"),
                                                (7, "?page=3"), (99, "?")])
def test_feature_page_links_back_to_the_listing_page_that_holds_it(listed_features: Sae, settings: Any,
                                                                   index: int, listing: str) -> None:
    settings.ATLAS_FEATURES_PER_PAGE = 2
    if index < listed_features.d_sae:
        assert f'href="/tiny-llama/0-res-8/?around={index}"' in Client().get(f"{PAGE}{index}").content.decode()
    response = Client().get(PAGE, {"around": str(index)})
    assert (response.status_code, response["Location"]) == (302, f"/tiny-llama/0-res-8/{listing}")


def test_sort_queries_use_the_run_indexes(listed_features: Sae) -> None:
    queryset = sae_features(listed_features, FeatureListing(sort=FeatureSort.DENSITY, descending=True))
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        plan = queryset.explain()
        cursor.execute("RESET enable_seqscan")
    assert "feature_run_density" in plan


@pytest.mark.parametrize(("show_dead", "expected"), [(False, 5), (True, 8)])
def test_the_plain_listing_takes_its_length_from_the_runs_counts(listed_features: Sae, show_dead: bool,
                                                                 expected: int) -> None:
    listing = FeatureListing(show_dead=show_dead, sort=FeatureSort.DENSITY)
    with CaptureQueriesContext(connection) as queries:
        page = sae_features_page(listed_features, listing, 1)
        rows = list(page)
    assert page.paginator.count == expected == len(rows) == sae_features(listed_features, listing).count()
    assert not any("COUNT(" in query["sql"] for query in queries.captured_queries)


def test_a_filtered_listing_is_counted(listed_features: Sae) -> None:
    listing = FeatureListing(max_act_min=3.0)
    with CaptureQueriesContext(connection) as queries:
        count = sae_features_page(listed_features, listing, 1).paginator.count
    assert count == 3  # features 3, 4 and 7
    assert any("COUNT(" in query["sql"] for query in queries.captured_queries)


def test_publishing_stores_the_runs_counts(published_feature: Feature) -> None:
    run = DashboardRun.objects.get(pk=published_feature.run_id)
    features = Feature.objects.filter(run=run)
    assert (run.features_total, run.features_dead, run.features_dense) == (
        features.count(), features.filter(frac_nonzero=0).count(), features.filter(frac_nonzero__gt=0.1).count())


def test_the_migration_counts_runs_published_before_counts_were_stored(listed_features: Sae) -> None:
    migration = importlib.import_module("migrations.saes.0004_run_feature_counts")
    DashboardRun.objects.update(features_total=None, features_dead=None, features_dense=None)
    migration.count_published_runs(django_apps, None)
    run = DashboardRun.objects.get(pk=listed_features.published_run_id)
    assert (run.features_total, run.features_dead, run.features_dense) == (8, 3, 2)  # dense: 3 (0.25) and 6 (0.5)


# Two features a page. Pages past the middle are read from the far end in the reverse order; they must hold
# the same rows as reading from the start would. The dead features tie at density 0, broken by index.
@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"sort": "density", "dead": "on"}, [[0, 1], [2, 7], [4, 5], [3, 6]]),
        ({"sort": "density", "order": "desc", "dead": "on"}, [[6, 3], [5, 4], [7, 2], [1, 0]]),
        ({"sort": "max_act", "dead": "on"}, [[0, 1], [2, 5], [6, 3], [7, 4]]),
        ({"sort": "index", "order": "desc", "dead": "on"}, [[7, 6], [5, 4], [3, 2], [1, 0]]),
        ({"sort": "density"}, [[7, 4], [5, 3], [6]]),
        ({"sort": "index"}, [[3, 4], [5, 6], [7]]),
    ],
)
def test_every_page_holds_its_share_of_the_sorted_listing(listed_features: Sae, settings: Any,
                                                          params: dict[str, str], expected: list[list[int]]) -> None:
    settings.ATLAS_FEATURES_PER_PAGE = 2
    assert [listed(**params, page=str(number)) for number in range(1, len(expected) + 1)] == expected


def test_density_ties_are_broken_by_index_on_every_page(listed_features: Sae, settings: Any) -> None:
    listed_features.published_run.features.filter(index__in=[3, 5, 7]).update(frac_nonzero=0.01)  # type: ignore[union-attr]
    settings.ATLAS_FEATURES_PER_PAGE = 2
    assert [listed(sort="density", page=str(number)) for number in (1, 2, 3)] == [[4, 3], [5, 7], [6]]
    assert [listed(sort="density", order="desc", page=str(number)) for number in (1, 2, 3)] == [[6, 7], [5, 3], [4]]


def test_a_page_past_the_middle_is_read_from_the_far_end(listed_features: Sae, settings: Any) -> None:
    settings.ATLAS_FEATURES_PER_PAGE = 2
    listing = FeatureListing(sort=FeatureSort.DENSITY)
    with CaptureQueriesContext(connection) as queries:
        rows = [feature.index for feature in sae_features_page(listed_features, listing, 3)]
    assert rows == [6]
    [select] = [query["sql"] for query in queries.captured_queries if "ORDER BY" in query["sql"]]
    assert '"frac_nonzero" DESC' in select
    assert "OFFSET" not in select
