"""The steering page: /steer to steer a model with features and vectors, /steer/<id> to reopen a stored result with
its settings."""

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse

from atlas.errors import NotFound
from atlas.lms.selectors import language_models_list
from atlas.steering.schemas import steer_answer
from atlas.steering.selectors import steer_output_get


def steer_page(request: HttpRequest) -> HttpResponse:
    return render(request, "steer.html", {"language_models": language_models_list(), "result": None})


def steer_output_page(request: HttpRequest, output_id: str) -> HttpResponse:
    try:
        output = steer_output_get(output_id)
    except NotFound as error:
        raise Http404(str(error)) from error
    share_url = request.build_absolute_uri(reverse("steer-output", args=[output.id]))
    result = steer_answer(output, share_url).model_dump(mode="json", by_alias=True)
    context = {"language_models": language_models_list(), "result": result, "output": output}
    return render(request, "steer.html", context)
