"""A vector's page, at its Neuronpedia address /<model>/<source>/<index>, and its owner's delete button."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from atlas.accounts.auth import LoggedInRequest
from atlas.errors import NotFound
from atlas.vectors.models import Vector
from atlas.vectors.selectors import vector_facts, vector_get, vector_may_delete, vector_values_shown
from atlas.vectors.services import VectorForbidden, vector_delete


def _vector(model_id: str, source: str, index: str) -> Vector:
    try:
        return vector_get(model_id, source, int(index))
    except NotFound as error:
        raise Http404(str(error)) from error


def vector_page(request: HttpRequest, model_id: str, source: str, index: str) -> HttpResponse:
    vector = _vector(model_id, source, index)
    context = {
        "vector": vector,
        "facts": vector_facts(vector),
        "values": vector_values_shown(vector),
        "may_delete": vector_may_delete(vector, request.user),
    }
    return render(request, "vector.html", context)


@login_required
@require_POST
def vector_remove(request: LoggedInRequest, model_id: str, source: str, index: str) -> HttpResponse:
    vector = _vector(model_id, source, index)
    address = str(vector)
    try:
        vector_delete(vector=vector, by=request.user)
    except VectorForbidden as error:
        raise PermissionDenied(str(error)) from error
    messages.success(request, f"Vector {address} is deleted.")
    return redirect("home")
