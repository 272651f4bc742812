"""/api/openapi.json describes every /api/ route."""

import re

from django.test import Client

from atlas.openapi import DOCUMENT
from atlas.urls import api_patterns

CATCH_ALL = r"^api/(?P<path>.*)$"


def openapi_path(regex: str) -> str:
    """^api/feature/(?P<model_id>...)/?$ -> /api/feature/{model_id}, then OpenAPI's camelCase names."""
    path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", regex).removeprefix("^").removesuffix("$").removesuffix("/?")
    path = re.sub(r"_(\w)", lambda match: match.group(1).upper(), path.replace("\\.", "."))
    return "/" + path.replace("{saeId}", "{layer}")


def test_every_api_route_is_in_the_document(db: None) -> None:
    routes = {openapi_path(str(pattern.pattern)) for pattern in api_patterns if str(pattern.pattern) != CATCH_ALL}
    assert routes == set(DOCUMENT["paths"])


def test_document_is_served(db: None) -> None:
    body = Client().get("/api/openapi.json").json()
    assert body["openapi"].startswith("3.") and "/api/features-offset" in body["paths"]
