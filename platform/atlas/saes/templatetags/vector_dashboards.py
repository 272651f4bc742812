"""The vector page's dashboard box: the SAEs holding the vector's dashboard with their runs, and for its owner (or
staff) the form that computes one. A tag of atlas.saes, since atlas.vectors, below it, may not read SAEs."""

from typing import Any

from django import template

from atlas.saes.selectors import vector_dashboard_datasets, vector_dashboards
from atlas.vectors.models import Vector
from atlas.vectors.selectors import vector_may_manage

register = template.Library()


@register.inclusion_tag("vector_dashboard.html", takes_context=True)
def vector_dashboard(context: template.Context, vector: Vector) -> dict[str, Any]:
    user = context.get("user")
    return {
        "vector": vector,
        "dashboards": vector_dashboards(vector),
        "may_start": user is not None and vector_may_manage(vector, user),
        "datasets": vector_dashboard_datasets(vector),
    }
