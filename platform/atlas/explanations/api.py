"""Neuronpedia's explanation endpoints: POST /api/explanation/new (by API key) and /api/explanation/search (public),
a model's labels matching a query, a page at a time."""

from django.http import HttpRequest
from ninja import Router, Status

from atlas.accounts.auth import ApiKeyAuth, ApiKeyRequest
from atlas.explanations.schemas import (
    SEARCH_PAGE_SIZE,
    ExplanationCreated,
    ExplanationNew,
    ExplanationOut,
    ExplanationSearch,
    ExplanationSearchOut,
    ExplanationSearchRequestOut,
)
from atlas.explanations.selectors import explanations_matching
from atlas.explanations.services import explanation_create
from atlas.jsonapi import error_responses
from atlas.saes.selectors import sae_get, saes_named

router = Router(tags=["explanations"], by_alias=True)


@router.post("/explanation/new", auth=ApiKeyAuth(), url_name="api-explanation-new",
             response={201: ExplanationCreated, **error_responses(401, 404)})
def explanation_new(request: ApiKeyRequest, body: ExplanationNew) -> Status[ExplanationCreated]:
    """Label a feature (needs an x-api-key); the explanation is the key holder's."""
    explanation = explanation_create(sae=sae_get(body.model_id, body.layer), index=body.index,
                                     description=body.description, author=request.auth)
    return Status(201, ExplanationCreated(explanation=ExplanationOut.from_explanation(explanation)))


@router.post("/explanation/search", url_name="api-explanation-search",
             response={200: ExplanationSearchOut, **error_responses(404)})
def explanation_search(request: HttpRequest, body: ExplanationSearch) -> ExplanationSearchOut:
    """Labels of the model's features (of the SAEs in `layers`, or all of them) that match the query, best first,
    20 from `offset` on."""
    saes = saes_named(body.model_id, body.layers)
    # One more than a page is read, so that hasMore is exact (Neuronpedia guesses it from a full page).
    matching = explanations_matching(body.query).filter(sae__in=saes).select_related("sae__language_model", "author")
    found = list(matching[body.offset: body.offset + SEARCH_PAGE_SIZE + 1])
    page, has_more = found[:SEARCH_PAGE_SIZE], len(found) > SEARCH_PAGE_SIZE
    asked = ExplanationSearchRequestOut(model_id=body.model_id, query=body.query,
                                        layers=[sae.slug for sae in saes], offset=body.offset)
    results = [ExplanationOut.from_explanation(explanation) for explanation in page]
    return ExplanationSearchOut(request=asked, results=results, results_count=len(results), has_more=has_more,
                                next_offset=body.offset + len(results) if has_more else None)

