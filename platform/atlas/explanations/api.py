"""POST /api/explanation/new: Neuronpedia's endpoint for adding a feature's explanation, by API key."""

from django.http import HttpRequest, JsonResponse

from atlas.explanations.selectors import explanation_payload
from atlas.explanations.services import ExplanationError, explanation_create
from atlas.features.api import feature_index, sae_of
from atlas.jsonapi import ApiError, api_endpoint, api_user, body_field, body_object, json_body


@api_endpoint(("POST",))
def explanation_new(request: HttpRequest) -> JsonResponse:
    author = api_user(request)
    body = body_object(json_body(request))
    sae = sae_of(body)
    try:
        explanation = explanation_create(sae=sae, index=feature_index(body),
                                         description=body_field(body, "description", str), author=author)
    except ExplanationError as error:
        raise ApiError(400, "bad_request", str(error)) from error
    return JsonResponse({"explanation": explanation_payload(explanation)}, status=201)
