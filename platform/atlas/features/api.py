"""JSON API for features: one in Neuronpedia's field names, several, a page by offset, and live activations of
typed text (one feature, the SAE's strongest features, or each token's strongest features)."""

from typing import Annotated

from django.http import HttpRequest, HttpResponse
from ninja import Body, Path, Router

from atlas.errors import NotFound
from atlas.features.live import feature_activations_live, tokens_shown, top_features_by_token_live, top_features_live
from atlas.features.schemas import (
    ActivationNew,
    FeatureLookup,
    FeatureLookups,
    FeatureOut,
    FeaturesOffset,
    SearchAll,
    SearchAllOut,
    TextActivationAnomalyOut,
    TextActivationOut,
    TokenTopFeaturesOut,
    TopkByToken,
    TopkByTokenOut,
)
from atlas.features.selectors import FeatureView, feature_detail, features_brief, features_detail, features_offset
from atlas.jsonapi import POSTGRES_INTEGER_MAX, Identifier, error_responses
from atlas.lms.selectors import language_models_list
from atlas.ratelimit import LIVE_RATE
from atlas.saes.models import Sae
from atlas.saes.selectors import sae_get, saes_of_source_set

router = Router(tags=["features"], by_alias=True)
# Live answers wait on a worker: 502 when it fails, 503 when none answers in time; 429 over ATLAS_LIVE_RATE.
LIVE_ERRORS = error_responses(404, 429, 502, 503)


@router.get("/feature/{modelId}/{layer}/{int:index}", url_name="api-feature",
            response={200: FeatureOut, **error_responses(404)})
def feature(request: HttpRequest, model_id: Annotated[Identifier, Path(alias="modelId")], layer: Identifier,
            index: Annotated[int, Path(ge=0, le=POSTGRES_INTEGER_MAX)]) -> HttpResponse:
    """One feature's dashboard in Neuronpedia's field names, with its explanations."""
    # The hot path: pydantic writes the JSON in one call, sparing ninja's validate, dump and encode round trip.
    body = FeatureOut.from_view(feature_detail(model_id, layer, index)).model_dump_json(by_alias=True)
    return HttpResponse(body, content_type="application/json")


@router.post("/features", url_name="api-features", response={200: list[FeatureOut], **error_responses(404)})
def features(request: HttpRequest, lookups: Body[FeatureLookups]) -> list[FeatureOut]:
    """Several features at once, in the order asked; any one missing is a 404."""
    saes = {key: sae_get(*key) for key in dict.fromkeys((lookup.model_id, lookup.layer) for lookup in lookups)}
    found: dict[tuple[tuple[str, str], int], FeatureView] = {}
    for key, sae in saes.items():
        indices = [lookup.index for lookup in lookups if (lookup.model_id, lookup.layer) == key]
        found |= {(key, view.feature.index): view for view in features_detail(sae, indices)}
    return [FeatureOut.from_view(_found_or_missing(found, saes, lookup)) for lookup in lookups]


def _found_or_missing(found: dict[tuple[tuple[str, str], int], FeatureView], saes: dict[tuple[str, str], Sae],
                      lookup: FeatureLookup) -> FeatureView:
    key = (lookup.model_id, lookup.layer)
    if (key, lookup.index) not in found:
        raise NotFound(f"{saes[key]} has no published feature {lookup.index}.")
    return found[key, lookup.index]


@router.post("/features-offset", url_name="api-features-offset",
             response={200: list[FeatureOut], **error_responses(404)})
def features_by_offset(request: HttpRequest, body: FeaturesOffset) -> list[FeatureOut]:
    """A page of an SAE's features from index `offset` on; an offset past the end gives an empty list."""
    sae = sae_get(body.model_id, body.layer)
    return [FeatureOut.from_view(view) for view in features_offset(sae, body.offset)]


@router.post("/activation/new", url_name="api-activation-new",
             response={200: TextActivationAnomalyOut, **LIVE_ERRORS})
def activation_new(request: HttpRequest, body: ActivationNew) -> TextActivationAnomalyOut:
    """A feature's activation on each token of typed text (BOS first), computed by a worker while the request
    waits, with each token's anomaly scores (`anomaly`): the SAE's reconstruction error and the rarity of the
    features that fire, and the share of the dataset's tokens that score lower."""
    sae = sae_get(body.feature.model_id, body.feature.source)
    index = body.feature.index
    if index >= sae.d_sae:
        raise NotFound(f"{sae} has features 0 to {sae.d_sae - 1}; there is no feature {index}.")
    LIVE_RATE.check(request)
    live = feature_activations_live(sae=sae, index=index, text=body.custom_text, anomaly=True)
    return TextActivationAnomalyOut.from_live_anomaly(sae, live)


def _search_saes(body: SearchAll) -> list[Sae]:
    if body.source is not None:
        return [sae_get(body.model_id, body.source)]
    assert body.source_set is not None  # SearchAll asks for one of the two
    saes = saes_of_source_set(body.model_id, body.source_set)
    if not saes:
        raise NotFound(f"Model '{body.model_id}' has no SAE in source set '{body.source_set}'.")
    return saes


@router.post("/search-all", url_name="api-search-all", response={200: SearchAllOut, **LIVE_ERRORS})
def search_all(request: HttpRequest, body: SearchAll) -> SearchAllOut:
    """The features that fire most strongly on typed text, strongest first, computed by a worker."""
    found: list[TextActivationOut] = []
    tokens: list[str] = []
    saes = _search_saes(body)
    LIVE_RATE.check(request)
    for sae in saes:
        live = top_features_live(sae=sae, text=body.text, n_results=body.num_results)
        tokens = live.tokens
        found += [TextActivationOut.from_live(sae, live, feature) for feature in live.features]
    found.sort(key=lambda result: -result.max_value)
    return SearchAllOut(tokens=tokens, result=found[: body.num_results])


def _sae_in_body(model_id: str, source: str) -> Sae:
    """An unknown model or SAE is a 404 as on every endpoint (a body the schema takes is never a 400), with a message
    naming the field."""
    try:
        return sae_get(model_id, source)
    except NotFound as error:
        if any(model.slug == model_id for model in language_models_list()):
            raise NotFound(f"'source' names no SAE of the model: {error}") from error
        raise NotFound(f"'modelId' names no model: {error}") from error


@router.post("/search-topk-by-token", url_name="api-search-topk-by-token",
             response={200: TopkByTokenOut, **LIVE_ERRORS})
def search_topk_by_token(request: HttpRequest, body: TopkByToken) -> TopkByTokenOut:
    """Each token's strongest features on typed text, computed by a worker, with each feature's published density
    and newest label, as Neuronpedia's search-topk-by-token answers."""
    sae = _sae_in_body(body.model_id, body.source)
    LIVE_RATE.check(request)
    tokens = top_features_by_token_live(sae=sae, text=body.text, n_results=body.num_results)
    briefs = features_brief(sae, {index for token in tokens for index, _ in token.features})
    densities = {index: brief.feature.frac_nonzero for index, brief in briefs.items()}
    shown = tokens_shown(tokens, ignore_bos=body.ignore_bos, densities=densities,
                         density_threshold=body.density_threshold)
    return TopkByTokenOut(source=sae.slug, results=[TokenTopFeaturesOut.from_live(token, briefs) for token in shown])
