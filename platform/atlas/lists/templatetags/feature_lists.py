"""A feature page's "Add to list" box: the logged-in user's lists and a note. A tag of atlas.lists, since
atlas.features, below it, may not read lists."""

from typing import Any

from django import template
from django.contrib.auth.models import User

from atlas.lists.selectors import lists_owned
from atlas.saes.models import Sae

register = template.Library()


@register.inclusion_tag("feature_list_add.html", takes_context=True)
def feature_list_add(context: template.Context, sae: Sae, index: int) -> dict[str, Any]:
    user = context.get("user")
    signed_in = isinstance(user, User) and user.is_authenticated
    return {
        "sae": sae,
        "index": index,
        "signed_in": signed_in,
        "owned": lists_owned(user) if isinstance(user, User) and signed_in else [],
        "csrf_token": context.get("csrf_token"),
        "request": context.get("request"),
    }
