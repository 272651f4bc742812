"""Explanation pages: writing one from the feature page, and searching them from every page."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from atlas.accounts.auth import LoggedInRequest
from atlas.errors import NotFound
from atlas.explanations.forms import ExplanationForm
from atlas.explanations.selectors import explanations_search
from atlas.explanations.services import ExplanationError, explanation_create
from atlas.saes.selectors import sae_get


@login_required
@require_POST
def explanation_new(request: LoggedInRequest, model_id: str, sae_id: str, index: int) -> HttpResponse:
    try:
        sae = sae_get(model_id, sae_id)
    except NotFound as error:
        raise Http404(str(error)) from error
    form = ExplanationForm(request.POST)
    if not form.is_valid():
        messages.error(request, " ".join(str(error) for error in form.errors.get("description", [])))
        return redirect("feature", model_id=model_id, sae_id=sae_id, index=index)
    try:
        explanation_create(sae=sae, index=index, description=form.cleaned_data["description"],
                           author=request.user)
    except ExplanationError as error:
        messages.error(request, str(error))
    return redirect("feature", model_id=model_id, sae_id=sae_id, index=index)


def search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    results = explanations_search(query) if query else []
    return render(request, "search.html", {"query": query, "results": results})
