"""The SAE page's quality metrics table, as an inclusion tag so the page's view needs to pass nothing more."""

from typing import Any

from django import template

from atlas.saes.models import Sae
from atlas.saes.selectors import DENSE_FEATURE_FRACTION, sae_metrics_view

register = template.Library()


@register.inclusion_tag("metrics.html")
def sae_metrics(sae: Sae) -> dict[str, Any]:
    return {"view": sae_metrics_view(sae), "dense_percent": f"{DENSE_FEATURE_FRACTION:.0%}"}
