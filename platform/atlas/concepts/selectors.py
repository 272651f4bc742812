"""Reads of concept searches and detectors, and a search's results with each ranked feature's label, density and
top tokens from its published dashboard."""

from typing import Any

from atlas.concepts.models import ConceptSearch, Detector
from atlas.errors import NotFound
from atlas.features.selectors import FeatureView, features_detail
from atlas.saes.models import Sae

# Tokens shown per ranked feature: the tokens its top examples peak on, distinct, strongest first.
TOP_TOKENS = 5


def concept_search_get(search_id: str) -> ConceptSearch:
    search = ConceptSearch.objects.select_related("language_model", "dataset").filter(pk=search_id).first()
    if search is None:
        raise NotFound(f"No concept search '{search_id}'. Start one at /concepts.")
    return search


def detector_get(detector_id: str) -> Detector:
    detector = Detector.objects.select_related("sae__language_model", "search").filter(pk=detector_id).first()
    if detector is None:
        raise NotFound(f"No detector '{detector_id}'. Save one from a concept search at /concepts.")
    return detector


def search_saes(search: ConceptSearch) -> list[Sae]:
    """The search's SAEs that still exist, in the order asked."""
    found = {sae.pk: sae for sae in Sae.objects.select_related("language_model").filter(pk__in=search.sae_ids)}
    return [found[sae_id] for sae_id in search.sae_ids if sae_id in found]


def search_results_shown(search: ConceptSearch) -> list[dict[str, Any]]:
    """Each SAE's result with its source id, and each ranked feature's label, density and top tokens (None where the
    SAE or its feature is gone)."""
    saes = {sae.pk: sae for sae in search_saes(search)}
    shown = []
    for result in search.results:
        sae = saes.get(result["saeId"])
        views = _views(sae, [feature["index"] for feature in result["features"]]) if sae else {}
        features = [{**feature, **_feature_facts(views.get(feature["index"]))} for feature in result["features"]]
        shown.append({**result, "source": sae.slug if sae else None, "features": features})
    return shown


def _views(sae: Sae, indices: list[int]) -> dict[int, FeatureView]:
    return {view.feature.index: view for view in features_detail(sae, indices)}


def _feature_facts(view: FeatureView | None) -> dict[str, Any]:
    if view is None:
        return {"label": None, "density": None, "topTokens": []}
    tokens: list[str] = []
    for example in view.top:
        token = example.tokens[example.focus] if 0 <= example.focus < len(example.tokens) else None
        if token is not None and token not in tokens:
            tokens.append(token)
    return {"label": view.explanations[0].description if view.explanations else None,
            "density": view.feature.frac_nonzero, "topTokens": tokens[:TOP_TOKENS],
            "logitTokens": [token for token, _ in view.pos_logits[:TOP_TOKENS]]}
