"""Reading vectors: by their Neuronpedia address, an owner's list, and the values as a reader sees them."""

from dataclasses import dataclass

import numpy as np
from django.contrib.auth.models import AnonymousUser, User

from atlas.errors import NotFound
from atlas.lms.models import LanguageModel
from atlas.vectors.models import HOOK_SOURCE_SUFFIX, VECTOR_SOURCE_PATTERN, Vector


def vector_source_reserved(source: str) -> bool:
    """Whether an id has the shape of a vector source, which no SAE may take (a vector steers like a feature, by
    `{modelId, layer: <source>, index}`, so the two must never share an address)."""
    return VECTOR_SOURCE_PATTERN.match(source) is not None


def vector_get(model_slug: str, source: str, index: int) -> Vector:
    vector = _vector_at(model_slug, source, index)
    if vector is None:
        if not LanguageModel.objects.filter(slug=model_slug).exists():
            raise NotFound(f"No model '{model_slug}'. The home page lists the models this server has.")
        raise NotFound(f"{model_slug} has no vector {source}/{index}; POST /api/vector/list-owned lists yours.")
    return vector


def _vector_at(model_slug: str, source: str, index: int) -> Vector | None:
    match = VECTOR_SOURCE_PATTERN.match(source)
    if match is None:
        return None
    hook_type = next(hook for hook, suffix in HOOK_SOURCE_SUFFIX.items() if suffix == match["hook"])
    return (Vector.objects.select_related("language_model", "owner")
            .filter(pk=index, language_model__slug=model_slug, layer=int(match["layer"]), hook_type=hook_type)
            .first())


def vectors_owned(owner: User) -> list[Vector]:
    return list(Vector.objects.select_related("language_model", "owner").filter(owner=owner))


def vector_may_manage(vector: Vector, user: User | AnonymousUser) -> bool:
    """Whether user may delete the vector or compute its dashboards: its owner, or staff."""
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_staff or vector.owner_id == user.pk


def vector_may_delete(vector: Vector, user: User | AnonymousUser) -> bool:
    return vector_may_manage(vector, user)


def vector_values_shown(vector: Vector) -> list[float]:
    """Each float32 value as the shortest decimal that reads back as it (0.1, not 0.10000000149011612), so a client
    that sent float32-exact values gets the very numbers it sent."""
    return [float(str(value)) for value in vector.values_array()]


@dataclass(frozen=True)
class VectorFacts:
    norm: float
    width: int


def vector_facts(vector: Vector) -> VectorFacts:
    values = vector.values_array()
    return VectorFacts(norm=float(np.linalg.norm(values.astype(np.float64))), width=int(values.size))
