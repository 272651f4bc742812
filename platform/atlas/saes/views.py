"""The SAE upload page, and an SAE owner's actions: cancel its run, run it again, delete it (login required)."""

from collections.abc import Callable
from functools import wraps

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from atlas.accounts.auth import LoggedInRequest
from atlas.errors import NotFound
from atlas.lms.selectors import hook_names_known
from atlas.saes.forms import SaeUploadForm
from atlas.saes.selectors import sae_get, sae_holdings, sae_run_get, vector_dashboard_dataset
from atlas.saes.services import (
    SaeActionConflict,
    SaeActionForbidden,
    SaeActionRefused,
    SaeUploadError,
    dashboard_run_again,
    dashboard_run_cancel,
    sae_delete,
    sae_manage_check,
    sae_upload,
    vector_dashboard_start,
)
from atlas.vectors.selectors import vector_get

OwnerView = Callable[..., HttpResponse]


@login_required
def upload(request: LoggedInRequest) -> HttpResponse:
    form = SaeUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            sae = sae_upload(uploaded_by=request.user, **form.service_arguments())
        except SaeUploadError as error:
            form.add_error(error.field, error.message)
        else:
            return redirect("sae", model_id=sae.language_model.slug, sae_id=sae.slug)
    return render(request, "upload.html", {"form": form, "hook_names": hook_names_known()})



def _owner_action(view: OwnerView) -> OwnerView:
    """Someone who may not act on the SAE is answered 403 with the reason, an address that names nothing 404."""

    @wraps(view)
    def checked(request: LoggedInRequest, model_id: str, sae_id: str, **kwargs: int) -> HttpResponse:
        try:
            return view(request, model_id, sae_id, **kwargs)
        except SaeActionForbidden as error:
            raise PermissionDenied(error.message) from error
        except NotFound as error:
            raise Http404(str(error)) from error

    return checked


@login_required
@require_POST
@_owner_action
def run_cancel(request: LoggedInRequest, model_id: str, sae_id: str, run_id: int) -> HttpResponse:
    try:
        dashboard_run_cancel(run=sae_run_get(sae_get(model_id, sae_id), run_id), by=request.user)
    except SaeActionConflict as error:
        messages.error(request, error.message)
    else:
        messages.success(request, f"Run {run_id} is cancelled; the dashboards published before it stay.")
    return redirect("sae", model_id=model_id, sae_id=sae_id)


@login_required
@require_POST
@_owner_action
def sae_rerun(request: LoggedInRequest, model_id: str, sae_id: str) -> HttpResponse:
    try:
        dashboard_run_again(sae=sae_get(model_id, sae_id), by=request.user)
    except SaeActionConflict as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "A new run is queued; the published dashboards stay until it publishes its own.")
    return redirect("sae", model_id=model_id, sae_id=sae_id)


@login_required
@require_http_methods(["GET", "HEAD", "POST"])
@_owner_action
def sae_remove(request: LoggedInRequest, model_id: str, sae_id: str) -> HttpResponse:
    """Asks to confirm by typing the SAE's address, in a plain form (the pages allow no inline script), then
    deletes."""
    sae = sae_get(model_id, sae_id)
    sae_manage_check(sae=sae, by=request.user, action="delete it")
    address, error = str(sae), ""
    if request.method == "POST":
        if request.POST.get("confirm", "").strip() == address:
            sae_delete(sae=sae, by=request.user)
            messages.success(request, f"{address} is deleted, with its runs, features, labels and files.")
            return redirect("home")
        error = f"Type {address} exactly to delete it."
    return render(request, "sae_delete.html", {"sae": sae, "address": address, "error": error,
                                               "holdings": sae_holdings(sae)})


def _bias(text: str) -> float:
    """The form's bias: empty is 0; anything else must be a number (the service refuses one that is not finite)."""
    try:
        return float(text.strip() or 0)
    except ValueError:
        raise SaeActionRefused(f"'bias' must be a number, such as 0 or -1.5; it is '{text}'.") from None


@login_required
@require_POST
def vector_dashboard_new(request: LoggedInRequest, model_id: str, source: str, index: str) -> HttpResponse:
    """The vector page's "Compute dashboard" form (its owner or staff): queue the vector's dashboard run on the
    dataset chosen, then back to the vector's page, which follows the run."""
    try:
        vector = vector_get(model_id, source, int(index))
    except NotFound as error:
        raise Http404(str(error)) from error
    try:
        dataset = vector_dashboard_dataset(vector, request.POST.get("dataset") or None)
        vector_dashboard_start(vectors=[vector], dataset=dataset, owner=request.user,
                               biases=[_bias(request.POST.get("bias", ""))])
    except SaeActionForbidden as error:
        raise PermissionDenied(error.message) from error
    except SaeActionRefused as error:
        messages.error(request, error.message)
    except NotFound as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"The dashboard of {vector.label} is queued on {dataset.slug}; this page follows "
                                  "its run.")
    return redirect("vector", model_id=model_id, source=source, index=index)
