"""Template tags for dashboards: tokens shaded by activation, with the value on hover."""

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
