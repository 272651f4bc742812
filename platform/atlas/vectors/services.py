"""Writing vectors: checked against the model's hook (its width, finite float32 values), stored, deleted by their
owner or staff."""

import math
from collections.abc import Sequence

import numpy as np
from django.contrib.auth.models import User

from atlas.lms.models import LanguageModel
from atlas.vectors.models import (
    HOOK_SOURCE_SUFFIX,
    LABEL_MAX_LENGTH,
    STRENGTH_LIMIT,
    VALUES_DTYPE,
    Vector,
)
from atlas.vectors.selectors import vector_may_delete


class VectorRefused(ValueError):
    """A vector that cannot be stored; the message names the field and says what to send instead."""


class VectorForbidden(PermissionError):
    """Someone other than the vector's owner (or staff) asked to delete it."""


def vector_create(*, language_model_slug: str, layer: int, hook_type: str, values: Sequence[float], label: str,
                  default_strength: float, owner: User) -> Vector:
    language_model = _language_model(language_model_slug)
    hook = _checked_hook(language_model, layer, hook_type)
    packed = _checked_values(values, width=language_model.hook_widths[hook], hook=hook, model=language_model)
    return Vector.objects.create(language_model=language_model, layer=layer, hook_type=hook_type,
                                 values=packed, label=_checked_label(label),
                                 default_strength=_checked_strength(default_strength), owner=owner)


def vector_delete(*, vector: Vector, by: User) -> None:
    if not vector_may_delete(vector, by):
        raise VectorForbidden(f"Only {vector.owner.username}, who made {vector}, or staff may delete it; use their "
                              "API key, or ask staff.")
    vector.delete()


def _language_model(slug: str) -> LanguageModel:
    language_model = LanguageModel.objects.filter(slug=slug).first()
    if language_model is None:
        raise VectorRefused(f"'modelId': there is no model '{slug}'; the home page lists the models this server has.")
    return language_model


def _checked_hook(language_model: LanguageModel, layer: int, hook_type: str) -> str:
    if hook_type not in HOOK_SOURCE_SUFFIX:
        raise VectorRefused(f"'hookType' must be one of {', '.join(HOOK_SOURCE_SUFFIX)}; it is '{hook_type}'.")
    if not 0 <= layer < language_model.n_layers:
        raise VectorRefused(f"'layerNumber': {language_model.slug} has layers 0 to {language_model.n_layers - 1}; "
                            f"there is no layer {layer}.")
    hook = f"blocks.{layer}.{hook_type}"
    if hook not in language_model.hook_widths:
        raise VectorRefused(f"'hookType': {language_model.slug} has no hook {hook}; send another layer or hook.")
    return hook


def _checked_values(values: Sequence[float], *, width: int, hook: str, model: LanguageModel) -> bytes:
    if len(values) != width:
        raise VectorRefused(f"'vector' has {len(values)} values, but {model.slug}'s {hook} has width {width}; "
                            f"send {width} values.")
    with np.errstate(over="ignore"):
        array = np.asarray(values, dtype=np.float64).astype(VALUES_DTYPE)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise VectorRefused(f"'vector' value {bad[0]} ({values[bad[0]]}) is not a finite float32 (at most "
                            f"{float(np.finfo(VALUES_DTYPE).max):.4g} in size); send finite values.")
    return array.tobytes()


def _checked_label(label: str) -> str:
    label = " ".join(label.split())
    if not label:
        raise VectorRefused("'vectorLabel' is empty; name the vector, e.g. 'happy - sad'.")
    if len(label) > LABEL_MAX_LENGTH:
        raise VectorRefused(f"'vectorLabel' has {len(label)} characters; keep it to {LABEL_MAX_LENGTH}.")
    return label


def _checked_strength(strength: float) -> float:
    if not (math.isfinite(strength) and -STRENGTH_LIMIT <= strength <= STRENGTH_LIMIT):
        raise VectorRefused(f"'vectorDefaultSteerStrength' must be between {-STRENGTH_LIMIT:g} and "
                            f"{STRENGTH_LIMIT:g}; it is {strength}.")
    return strength
