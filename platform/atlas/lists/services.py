"""Writing feature lists: made by their owner, features added (each with a note) and removed by the owner alone;
a feature must name an SAE this server has and one of its indices."""

from collections.abc import Sequence
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db import transaction

from atlas.errors import NotFound
from atlas.lists.models import (
    DESCRIPTION_MAX_LENGTH,
    LIST_FEATURES_MAX,
    NAME_MAX_LENGTH,
    NOTE_MAX_LENGTH,
    FeatureList,
    ListItem,
)
from atlas.lists.selectors import list_may_edit
from atlas.saes.models import Sae


class ListRefused(ValueError):
    """A list or feature that cannot be stored; the message names the field and says what to send instead."""


class ListForbidden(PermissionError):
    """Someone other than the list's owner asked to change it."""


@dataclass(frozen=True)
class FeatureToAdd:
    model_slug: str
    sae_slug: str
    index: int
    note: str = ""


def list_create(*, owner: User, name: str, description: str = "", public: bool = True) -> FeatureList:
    return FeatureList.objects.create(owner=owner, name=_checked_name(name),
                                      description=_checked_text(description, "description", DESCRIPTION_MAX_LENGTH),
                                      public=public)


@transaction.atomic
def list_features_add(*, feature_list: FeatureList, by: User, features: Sequence[FeatureToAdd]) -> list[ListItem]:
    """Adds the features, in order; one already listed keeps its place and takes the new note if one is sent.
    All or nothing: one refused feature stores none of them."""
    _check_owner(feature_list, by)
    # Locked, so that two calls at once cannot together pass the list's limit.
    FeatureList.objects.select_for_update().filter(pk=feature_list.pk).first()
    saes = _saes_named(features)
    wanted = {(saes[position].pk, feature.index): (saes[position], feature)
              for position, feature in enumerate(features)}
    stored = {(item.sae_id, item.index): item
              for item in ListItem.objects.filter(feature_list=feature_list).select_related("sae__language_model")}
    new = [key for key in wanted if key not in stored]
    if len(stored) + len(new) > LIST_FEATURES_MAX:
        raise ListRefused(f"'featuresToAdd': the list holds {len(stored)} features and may hold {LIST_FEATURES_MAX}; "
                          f"these would add {len(new)}. Start another list.")
    for key in wanted.keys() & stored.keys():
        _note_update(stored[key], wanted[key][1].note.strip())
    created = ListItem.objects.bulk_create(
        ListItem(feature_list=feature_list, sae=wanted[key][0], index=wanted[key][1].index,
                 note=wanted[key][1].note.strip()) for key in new)
    stored |= {(item.sae_id, item.index): item for item in created}
    return [stored[key] for key in wanted]


def list_feature_remove(*, feature_list: FeatureList, by: User, model_slug: str, sae_slug: str, index: int) -> None:
    _check_owner(feature_list, by)
    removed, _ = ListItem.objects.filter(feature_list=feature_list, sae__language_model__slug=model_slug,
                                         sae__slug=sae_slug, index=index).delete()
    if not removed:
        raise NotFound(f"List '{feature_list.pk}' holds no feature {model_slug}/{sae_slug}/{index}.")


def _check_owner(feature_list: FeatureList, by: User) -> None:
    if not list_may_edit(feature_list, by):
        raise ListForbidden(f"Only {feature_list.owner.username}, who made list '{feature_list.pk}', may change it; "
                            "use their API key.")


def _note_update(item: ListItem, note: str) -> None:
    if note and note != item.note:
        item.note = note
        item.save(update_fields=["note"])


def _saes_named(features: Sequence[FeatureToAdd]) -> list[Sae]:
    """Each feature's SAE, checked to exist and to have the feature's index; the message names the entry."""
    if not features:
        raise ListRefused("'featuresToAdd' is empty; send at least one feature.")
    addresses = {(feature.model_slug, feature.sae_slug) for feature in features}
    found = {(sae.language_model.slug, sae.slug): sae for sae in Sae.objects.select_related("language_model")
             .filter(language_model__slug__in={model for model, _ in addresses},
                     slug__in={slug for _, slug in addresses})}
    saes: list[Sae] = []
    for position, feature in enumerate(features):
        sae = found.get((feature.model_slug, feature.sae_slug))
        if sae is None:
            raise ListRefused(f"'featuresToAdd[{position}].layer': there is no SAE {feature.model_slug}/"
                              f"{feature.sae_slug}; the home page lists the SAEs this server has.")
        if feature.index >= sae.d_sae:
            raise ListRefused(f"'featuresToAdd[{position}].index': {sae} has features 0 to {sae.d_sae - 1}; there is "
                              f"no feature {feature.index}.")
        _checked_text(feature.note, f"featuresToAdd[{position}].description", NOTE_MAX_LENGTH)
        saes.append(sae)
    return saes


def _checked_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise ListRefused("'name' is empty; name the list, e.g. 'joy features'.")
    if len(name) > NAME_MAX_LENGTH:
        raise ListRefused(f"'name' has {len(name)} characters; keep it to {NAME_MAX_LENGTH}.")
    return name


def _checked_text(text: str, field: str, most: int) -> str:
    text = text.strip()
    if len(text) > most:
        raise ListRefused(f"'{field}' has {len(text)} characters; keep it to {most}.")
    if "\x00" in text:
        raise ListRefused(f"'{field}' holds a NUL character (\\u0000); remove it.")
    return text
