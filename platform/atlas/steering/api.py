"""Neuronpedia's steering endpoints: POST /api/steer (a prompt's completion) and /api/steer-chat (a chat reply), each
DEFAULT and STEERED, answered from the stored result when the same request was made before (public, as on
Neuronpedia; a new result counts against ATLAS_LIVE_RATE)."""

from django.http import HttpRequest
from django.urls import reverse
from ninja import Router

from atlas.jsonapi import error_responses
from atlas.ratelimit import LIVE_RATE
from atlas.steering.models import SteerOutput
from atlas.steering.schemas import SteerChatIn, SteerChatOut, SteerCompletionIn, SteerCompletionOut
from atlas.steering.selectors import steer_output_found
from atlas.steering.services import steer_output_compute, steer_plan

router = Router(tags=["steering"], by_alias=True)
# A new result waits on a worker: 502 when it fails, 503 when none answers in time; 429 over ATLAS_LIVE_RATE.
STEER_ERRORS = error_responses(429, 502, 503)


def _output(request: HttpRequest, body: SteerCompletionIn | SteerChatIn) -> SteerOutput:
    plan = steer_plan(body)
    output = steer_output_found(plan.key)
    if output is not None:
        return output
    LIVE_RATE.check(request)
    creator = request.user if request.user.is_authenticated else None
    return steer_output_compute(plan=plan, creator=creator)


def _share_url(request: HttpRequest, output: SteerOutput) -> str:
    return request.build_absolute_uri(reverse("steer-output", args=[output.id]))


@router.post("/steer", url_name="api-steer", response={200: SteerCompletionOut, **STEER_ERRORS})
def steer(request: HttpRequest, body: SteerCompletionIn) -> SteerCompletionOut:
    """DEFAULT and STEERED completions of a prompt (each the prompt, then what the model wrote), every position
    steered, the prompt's included; with each generated token's log-prob and top alternatives."""
    output = _output(request, body)
    return SteerCompletionOut.from_output(output, _share_url(request, output))


@router.post("/steer-chat", url_name="api-steer-chat", response={200: SteerChatOut, **STEER_ERRORS})
def steer_chat(request: HttpRequest, body: SteerChatIn) -> SteerChatOut:
    """DEFAULT and STEERED replies to two conversations under the model's chat template."""
    output = _output(request, body)
    return SteerChatOut.from_output(output, _share_url(request, output))
