"""Neuronpedia's list endpoints: POST /api/list/new, add-features, remove, get, list (writes and the owner's lists
need an x-api-key; get reads a public list without one, a private one with its owner's)."""

from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest
from django.urls import reverse
from ninja import Router, Status

from atlas.accounts.auth import API_KEY_HEADER, ApiKeyAuth, ApiKeyRequest
from atlas.accounts.selectors import api_key_user
from atlas.jsonapi import ApiError, error_responses
from atlas.lists.models import FeatureList
from atlas.lists.schemas import (
    ListAddFeatures,
    ListAddress,
    ListFeatureAddress,
    ListFeatureOut,
    ListNew,
    ListOut,
    ListSummaryOut,
)
from atlas.lists.selectors import list_get, list_items, lists_owned
from atlas.lists.services import FeatureToAdd, list_create, list_feature_remove, list_features_add

router = Router(tags=["lists"], by_alias=True)


def _url(request: HttpRequest, feature_list: FeatureList) -> str:
    return request.build_absolute_uri(reverse("list", args=[feature_list.pk]))


def _list_out(request: HttpRequest, feature_list: FeatureList) -> ListOut:
    return ListOut.from_items(feature_list, list_items(feature_list), url=_url(request, feature_list))


def _key_holder(request: HttpRequest) -> User | AnonymousUser:
    """The holder of the request's key, if it sends one: a read needs none, but a key that is sent must be valid."""
    secret = request.headers.get(API_KEY_HEADER, "").strip()
    if not secret:
        return AnonymousUser()
    user = api_key_user(secret)
    if user is None:
        raise ApiError(401, "unauthorized", "That API key is not valid; it may have been revoked.")
    return user


@router.post("/list/new", auth=ApiKeyAuth(), url_name="api-list-new",
             response={201: ListOut, **error_responses(401)})
def list_new(request: ApiKeyRequest, body: ListNew) -> Status[ListOut]:
    """Make a list (needs an x-api-key); it is the key holder's, public unless isPublic is false."""
    feature_list = list_create(owner=request.auth, name=body.name, description=body.description or "",
                               public=body.public)
    return Status(201, _list_out(request, feature_list))


@router.post("/list/add-features", auth=ApiKeyAuth(), url_name="api-list-add-features",
             response={200: list[ListFeatureOut], **error_responses(401, 403, 404)})
def list_add_features(request: ApiKeyRequest, body: ListAddFeatures) -> list[ListFeatureOut]:
    """Add features to your list, each with an optional note (`description`); answers them as stored."""
    feature_list = list_get(body.list_id, request.auth)
    features = [FeatureToAdd(model_slug=feature.model_id, sae_slug=feature.layer, index=feature.index,
                             note=feature.note or "") for feature in body.features]
    items = list_features_add(feature_list=feature_list, by=request.auth, features=features)
    return [ListFeatureOut.from_item(item) for item in items]


@router.post("/list/remove", auth=ApiKeyAuth(), url_name="api-list-remove",
             response={200: ListOut, **error_responses(401, 403, 404)})
def list_remove(request: ApiKeyRequest, body: ListFeatureAddress) -> ListOut:
    """Take a feature off your list; answers the list as it is now."""
    feature_list = list_get(body.list_id, request.auth)
    list_feature_remove(feature_list=feature_list, by=request.auth, model_slug=body.model_id, sae_slug=body.layer,
                        index=body.index)
    return _list_out(request, feature_list)


@router.post("/list/get", url_name="api-list-get", response={200: ListOut, **error_responses(401, 404)})
def list_read(request: HttpRequest, body: ListAddress) -> ListOut:
    """A list with its features: a public one for anyone, a private one for its owner's x-api-key."""
    return _list_out(request, list_get(body.list_id, _key_holder(request)))


@router.post("/list/list", auth=ApiKeyAuth(), url_name="api-list-list",
             response={200: list[ListSummaryOut], **error_responses(401)})
def list_owned(request: ApiKeyRequest) -> list[ListSummaryOut]:
    """The key holder's lists, newest first."""
    return [ListSummaryOut.from_list(owned.feature_list, url=_url(request, owned.feature_list),
                                     feature_count=owned.feature_count) for owned in lists_owned(request.auth)]
