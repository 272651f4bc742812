"""The SAE upload page (login required)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render

from atlas.accounts.auth import LoggedInRequest
from atlas.lms.selectors import hook_names_known
from atlas.saes.forms import SaeUploadForm
from atlas.saes.services import SaeUploadError, sae_upload


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
