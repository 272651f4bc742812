"""Reading feature lists: one list as its viewer may see it, an owner's lists, and each listed feature with its
label, density and top example for the list page."""

from dataclasses import dataclass
from itertools import groupby

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count

from atlas.errors import NotFound
from atlas.features.selectors import ExampleView, FeatureView, features_detail
from atlas.lists.models import FeatureList, ListItem


def list_may_see(feature_list: FeatureList, user: User | AnonymousUser) -> bool:
    return feature_list.public or list_may_edit(feature_list, user)


def list_may_edit(feature_list: FeatureList, user: User | AnonymousUser) -> bool:
    """Only the owner changes a list (staff included: a list is someone's own notes)."""
    return user.is_authenticated and user.is_active and feature_list.owner_id == user.pk


def list_get(list_id: str, viewer: User | AnonymousUser) -> FeatureList:
    """The list, if the viewer may see it; a private list is not found for anyone but its owner."""
    feature_list = FeatureList.objects.select_related("owner").filter(pk=list_id).first()
    if feature_list is None or not list_may_see(feature_list, viewer):
        raise NotFound(f"No list '{list_id}'; POST /api/list/list lists yours.")
    return feature_list


def list_items(feature_list: FeatureList) -> list[ListItem]:
    """The list's features in the order they were added, with their SAEs and models."""
    return list(feature_list.items.select_related("sae__language_model"))


@dataclass(frozen=True)
class OwnedList:
    feature_list: FeatureList
    feature_count: int


def lists_owned(owner: User) -> list[OwnedList]:
    """The owner's lists, newest first, with how many features each holds."""
    # (Ordered here: Django leaves Meta.ordering out of a GROUP BY query.)
    counted = (FeatureList.objects.select_related("owner").filter(owner=owner).annotate(counted=Count("items"))
               .order_by("-created", "id"))
    return [OwnedList(feature_list, feature_list.counted) for feature_list in counted]


@dataclass(frozen=True)
class ListedFeature:
    item: ListItem
    # None while the feature's SAE has no published dashboards.
    view: FeatureView | None

    @property
    def label(self) -> str | None:
        return self.view.explanations[0].description if self.view and self.view.explanations else None

    @property
    def top_example(self) -> ExampleView | None:
        return self.view.top[0] if self.view and self.view.top else None


def list_features_shown(feature_list: FeatureList) -> list[ListedFeature]:
    """Each listed feature with its published dashboard (read once per SAE), in the list's order."""
    items = list_items(feature_list)
    views: dict[tuple[int, int], FeatureView] = {}
    for sae_id, grouped in groupby(sorted(items, key=lambda item: item.sae_id), key=lambda item: item.sae_id):
        sae_items = list(grouped)
        for view in features_detail(sae_items[0].sae, [item.index for item in sae_items]):
            views[(sae_id, view.feature.index)] = view
    return [ListedFeature(item, views.get((item.sae_id, item.index))) for item in items]
