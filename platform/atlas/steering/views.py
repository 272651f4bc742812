"""The steering page: /steer to steer a model with features and vectors, /steer/<id> to reopen a stored result with
its settings."""

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from atlas.errors import NotFound
from atlas.lms.selectors import language_models_list
from atlas.saes.selectors import saes_list
from atlas.steering import schemas
from atlas.steering.selectors import steer_output_get
from atlas.vectors.models import STRENGTH_LIMIT, VECTOR_SOURCE_PATTERN
from workers.compute.steer_types import STEER_METHODS


def _page_context(result: dict[str, Any] | None, selected_model: str) -> dict[str, Any]:
    """What the page's form offers: each model's SAEs to pick features from, and the API's limits and defaults, so
    that the page never offers what the API refuses."""
    sources: dict[str, list[str]] = {}
    for sae in saes_list():
        sources.setdefault(sae.language_model.slug, []).append(sae.slug)
    return {
        "language_models": language_models_list(),
        "result": result,
        "selected_model": selected_model,
        "sources": sources,
        "steer_methods": STEER_METHODS,
        "limits": {
            "prompt_max_characters": schemas.PROMPT_MAX_CHARACTERS, "n_tokens_max": schemas.N_TOKENS_MAX,
            "temperature_max": schemas.TEMPERATURE_MAX, "strength_multiplier_max": schemas.STRENGTH_MULTIPLIER_MAX,
            "freq_penalty_limit": schemas.FREQ_PENALTY_LIMIT, "seed_limit": schemas.SEED_LIMIT,
            "features_max": schemas.FEATURES_MAX, "strength_limit": STRENGTH_LIMIT,
        },
        "defaults": {
            "temperature": schemas.DEFAULT_TEMPERATURE, "n_tokens": schemas.DEFAULT_N_TOKENS,
            "freq_penalty": schemas.DEFAULT_FREQ_PENALTY, "seed": schemas.DEFAULT_SEED,
            "strength_multiplier": schemas.DEFAULT_STRENGTH_MULTIPLIER, "steer_method": schemas.DEFAULT_METHOD,
        },
        # JavaScript's named groups are written (?<name>...), Python's (?P<name>...).
        "vector_source_pattern": VECTOR_SOURCE_PATTERN.pattern.replace("(?P<", "(?<"),
    }


def steer_page(request: HttpRequest) -> HttpResponse:
    """The form; ?model=&source=&index=[&strength=] opens it with that feature or vector chosen (the page reads
    them)."""
    return render(request, "steer.html", _page_context(None, request.GET.get("model", "")))


def steer_output_page(request: HttpRequest, output_id: str) -> HttpResponse:
    """A stored result with the settings it was made with, read from the table: no worker is asked."""
    try:
        output = steer_output_get(output_id)
    except NotFound as error:
        raise Http404(str(error)) from error
    share_url = request.build_absolute_uri(reverse("steer-output", args=[output.id]))
    result = schemas.steer_answer(output, share_url).model_dump(mode="json", by_alias=True)
    context = {**_page_context(result, output.language_model.slug), "output": output}
    return render(request, "steer.html", context)
