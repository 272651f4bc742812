"""Template tags for dashboards: tokens shaded by activation, with the value on hover."""

import math
from html import escape
from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

register = template.Library()

# Whitespace tokens would be invisible; show them the way Neuronpedia does.
_VISIBLE = str.maketrans({"\n": "↵", "\t": "⇥"})


@register.simple_tag
def shaded_tokens(tokens: list[str], values: list[float], focus: int, scale: float) -> SafeString:
    """One span per token; opacity is the activation over the feature's max, text is escaped.

    A page holds a thousand or more tokens, so this builds the spans itself rather than through format_html,
    which cost most of the page's time: the token text, the only text not ours, goes through html.escape
    (quotes included); the rest is a fixed class and numbers we format.
    """
    scale = scale if scale > 0 else 1.0
    spans = [
        f'<span class="{"tok focus" if position == focus else "tok"}"'
        f' style="--a:{min(max(value / scale, 0.0), 1.0):.3f}" title="{value:.3f}">'
        f"{escape(token.translate(_VISIBLE))}</span>"
        for position, (token, value) in enumerate(zip(tokens, values, strict=True))
    ]
    return mark_safe("".join(spans))  # every token was escaped above


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
