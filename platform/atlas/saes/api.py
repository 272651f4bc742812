"""Uploading an SAE by API: the upload form's fields as multipart/form-data, authenticated by x-api-key."""

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from atlas.jsonapi import ApiError, api_endpoint, api_user
from atlas.saes.forms import SaeUploadForm
from atlas.saes.services import SaeUploadError, sae_upload


def _form_problem(form: SaeUploadForm) -> str:
    """The form's errors in one line, each after the field it belongs to."""
    return " ".join(
        f"{'' if field == '__all__' else field + ': '}{' '.join(str(message) for message in messages)}"
        for field, messages in form.errors.items()
    )


@api_endpoint(("POST",))
def upload(request: HttpRequest) -> JsonResponse:
    """POST multipart: the /upload/ page's fields and files. 201 with the SAE and its run, or a JSON 4xx."""
    user = api_user(request)
    form = SaeUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        raise ApiError(400, "bad_upload", _form_problem(form))
    try:
        sae = sae_upload(uploaded_by=user, **form.service_arguments())
    except SaeUploadError as error:
        message = f"{error.field}: {error.message}" if error.field else error.message
        raise ApiError(400, "bad_upload", message) from error
    run = sae.runs.latest("created")
    return JsonResponse(
        {
            "modelId": sae.language_model.slug,
            "layer": sae.slug,
            "runId": run.pk,
            "run": reverse("api-run", kwargs={"run_id": run.pk}),
            "url": reverse("sae", kwargs={"model_id": sae.language_model.slug, "sae_id": sae.slug}),
        },
        status=201,
    )
