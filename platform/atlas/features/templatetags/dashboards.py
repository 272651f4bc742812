"""Template tags for dashboards: tokens shaded by activation, with the value on hover."""

import math
from typing import Any

from django import template
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

register = template.Library()

# Whitespace tokens would be invisible; show them the way Neuronpedia does.
_VISIBLE = str.maketrans({"\n": "↵", "\t": "⇥"})


@register.simple_tag
def shaded_tokens(tokens: list[str], values: list[float], focus: int, scale: float) -> SafeString:
    """One span per token; opacity is the activation over the feature's max, text is escaped."""
    scale = scale if scale > 0 else 1.0
    spans = (
        (
            "tok focus" if position == focus else "tok",
            f"{min(max(value / scale, 0.0), 1.0):.3f}",
            f"{value:.3f}",
            token.translate(_VISIBLE),
        )
        for position, (token, value) in enumerate(zip(tokens, values, strict=True))
    )
    return format_html_join("", '<span class="{}" style="--a:{}" title="{}">{}</span>', spans)


@register.filter
def percent(value: float) -> str:
    return format_html("{}%", f"{value * 100:.3g}")


# The density bar spans log10 densities from this floor (one token in ten million) up to 1.
DENSITY_LOG_FLOOR = -7.0


@register.filter
def log_density(value: float) -> str:
    return f"{math.log10(value):.2f}" if value > 0 else "dead"


@register.filter
def density_bar(value: float) -> str:
    """The bar's width in percent: log10 density placed between the floor and 0."""
    if value <= 0:
        return "0"
    return f"{min(max(1 - math.log10(value) / DENSITY_LOG_FLOOR, 0.0), 1.0) * 100:.1f}"


@register.filter
def get_item(mapping: dict[Any, Any], key: Any) -> Any:
    return mapping.get(key)
