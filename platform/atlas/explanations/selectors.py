"""Reads of explanations: a feature's labels and full-text search over them."""

from collections.abc import Iterable

from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
from django.db.models import F, QuerySet

from atlas.explanations.models import SEARCH_CONFIG, Explanation
from atlas.saes.models import Sae

SEARCH_RESULTS_SHOWN = 100


def feature_explanations(sae: Sae, indices: Iterable[int]) -> dict[int, list[Explanation]]:
    """Each feature's explanations, newest first."""
    explanations: dict[int, list[Explanation]] = {}
    rows = Explanation.objects.filter(sae=sae, index__in=list(indices)).select_related("author")
    for explanation in rows:
        explanation.sae = sae  # already loaded, with its language model
        explanations.setdefault(explanation.index, []).append(explanation)
    return explanations


def explanations_matching(query: str, *, sae: Sae | None = None) -> QuerySet[Explanation]:
    """Explanations whose text matches a web-search-style query (words, "phrases", -excluded), best first.

    The vector is the GIN index's expression, so Postgres answers from the index.
    """
    search = SearchQuery(query, config=SEARCH_CONFIG, search_type="websearch")
    explanations = Explanation.objects.annotate(vector=SearchVector("description", config=SEARCH_CONFIG)).filter(
        vector=search
    )
    if sae is not None:
        explanations = explanations.filter(sae=sae)
    # -pk last: ties of rank and time keep one order, so pages by offset neither repeat nor skip a label.
    return explanations.annotate(rank=SearchRank(F("vector"), search)).order_by("-rank", "-created", "-pk")


def explanations_search(query: str) -> list[Explanation]:
    return list(
        explanations_matching(query).select_related("sae__language_model", "author")[: SEARCH_RESULTS_SHOWN]
    )
