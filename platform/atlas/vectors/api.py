"""Neuronpedia's vector endpoints: POST /api/vector/new, get, delete, list-owned (writes and the owner's list need an
x-api-key; get is public, as on Neuronpedia)."""

from django.http import HttpRequest
from django.urls import reverse
from ninja import Router, Status

from atlas.accounts.auth import ApiKeyAuth, ApiKeyRequest
from atlas.jsonapi import error_responses
from atlas.vectors.models import DEFAULT_STRENGTH
from atlas.vectors.schemas import (
    VectorAddress,
    VectorCreated,
    VectorCreatedOut,
    VectorDeleted,
    VectorFound,
    VectorNew,
    VectorOut,
    VectorsOwned,
)
from atlas.vectors.selectors import vector_get, vectors_owned
from atlas.vectors.services import vector_create, vector_delete

router = Router(tags=["vectors"], by_alias=True)


@router.post("/vector/new", auth=ApiKeyAuth(), url_name="api-vector-new",
             response={201: VectorCreated, **error_responses(401)})
def vector_new(request: ApiKeyRequest, body: VectorNew) -> Status[VectorCreated]:
    """Store a vector at a residual-stream hook (needs an x-api-key); it is the key holder's."""
    strength = DEFAULT_STRENGTH if body.default_strength is None else float(body.default_strength)
    vector = vector_create(language_model_slug=body.model_id, layer=body.layer_number, hook_type=body.hook_type,
                           values=body.vector, label=body.label, default_strength=strength, owner=request.auth)
    url = request.build_absolute_uri(reverse("vector", args=[vector.language_model.slug, vector.source, vector.pk]))
    return Status(201, VectorCreated(message="Success", url=url, vector=VectorCreatedOut.from_vector(vector)))


@router.post("/vector/get", url_name="api-vector-get", response={200: VectorFound, **error_responses(404)})
def vector_read(request: HttpRequest, body: VectorAddress) -> VectorFound:
    """A vector by its address (public)."""
    return VectorFound(vector=VectorOut.from_vector(vector_get(body.model_id, body.source, body.index)))


@router.post("/vector/delete", auth=ApiKeyAuth(), url_name="api-vector-delete",
             response={200: VectorDeleted, **error_responses(401, 403, 404)})
def vector_remove(request: ApiKeyRequest, body: VectorAddress) -> VectorDeleted:
    """Delete a vector: its owner's key, or staff's."""
    vector = vector_get(body.model_id, body.source, body.index)
    address = str(vector)
    vector_delete(vector=vector, by=request.auth)
    return VectorDeleted(message=f"Deleted {address}.")


@router.post("/vector/list-owned", auth=ApiKeyAuth(), url_name="api-vector-list-owned",
             response={200: VectorsOwned, **error_responses(401)})
def vector_list_owned(request: ApiKeyRequest) -> VectorsOwned:
    """The key holder's vectors, newest first."""
    return VectorsOwned(vectors=[VectorOut.from_vector(vector) for vector in vectors_owned(request.auth)])
