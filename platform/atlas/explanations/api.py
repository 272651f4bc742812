"""POST /api/explanation/new: Neuronpedia's endpoint for adding a feature's explanation, by API key."""

from ninja import Router, Status

from atlas.accounts.auth import ApiKeyAuth, ApiKeyRequest
from atlas.explanations.schemas import ExplanationCreated, ExplanationNew, ExplanationOut
from atlas.explanations.services import explanation_create
from atlas.jsonapi import error_responses
from atlas.saes.selectors import sae_get

router = Router(tags=["explanations"], by_alias=True)


@router.post("/explanation/new", auth=ApiKeyAuth(), url_name="api-explanation-new",
             response={201: ExplanationCreated, **error_responses(401, 404)})
def explanation_new(request: ApiKeyRequest, body: ExplanationNew) -> Status[ExplanationCreated]:
    """Label a feature (needs an x-api-key); the explanation is the key holder's."""
    explanation = explanation_create(sae=sae_get(body.model_id, body.layer), index=body.index,
                                     description=body.description, author=request.auth)
    return Status(201, ExplanationCreated(explanation=ExplanationOut.from_explanation(explanation)))
