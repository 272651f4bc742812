"""The SAE page's owner actions (cancel the run, run again, delete), shown to its uploader and staff alone."""

from typing import Any

from django import template

from atlas.saes.models import DashboardRun, Sae
from atlas.saes.selectors import sae_may_manage

register = template.Library()


@register.inclusion_tag("sae_owner_actions.html", takes_context=True)
def sae_owner_actions(context: template.Context, sae: Sae, run: DashboardRun | None) -> dict[str, Any]:
    user = context.get("user")
    return {"shown": user is not None and sae_may_manage(sae, user), "user": user, "sae": sae, "run": run}
