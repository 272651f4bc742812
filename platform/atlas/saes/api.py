"""JSON API for SAEs: uploading one (the upload form's fields as multipart/form-data, by x-api-key), following
a dashboard run's progress, its owner's actions (cancel a run, run the SAE again, delete it), and a vector's
dashboard, computed as an SAE's."""

from typing import Annotated, Any

from django import forms
from django.http import HttpRequest
from django.urls import reverse
from ninja import Path, Router, Status
from pydantic import Field

from atlas.accounts.auth import ApiKeyAuth, ApiKeyRequest
from atlas.jsonapi import (
    ApiError,
    FeatureIndex,
    Identifier,
    JsonNumber,
    RequestSchema,
    ResponseSchema,
    error_responses,
)
from atlas.saes.forms import SaeUploadForm
from atlas.saes.schemas import RunOut, UploadOut
from atlas.saes.selectors import run_get, sae_get, vector_dashboard_dataset
from atlas.saes.services import (
    SaeUploadError,
    VectorDashboardRefused,
    dashboard_run_again,
    dashboard_run_cancel,
    sae_delete,
    sae_upload,
    vector_dashboard_start,
)
from atlas.vectors.selectors import vector_get

router = Router(tags=["saes"], by_alias=True)


def _form_field_schema(field: forms.Field) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "description": str(field.help_text or field.label or "")}
    if isinstance(field, forms.FileField):
        schema["format"] = "binary"
    if isinstance(field, forms.IntegerField):
        schema["type"] = "integer"
        schema |= {key: value for key, value in (("minimum", field.min_value), ("maximum", field.max_value))
                   if value is not None}
    return schema


def _form_request_body(form: type[forms.Form]) -> dict[str, Any]:
    """The form's fields as the OpenAPI multipart request body, so the document follows the form (which validates
    the upload, as it does on the page)."""
    fields = form.base_fields
    schema = {"type": "object", "required": [name for name, field in fields.items() if field.required],
              "properties": {name: _form_field_schema(field) for name, field in fields.items()}}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _form_problem(form: SaeUploadForm) -> str:
    """The form's errors in one line, each after the field it belongs to."""
    return " ".join(
        f"{'' if field == '__all__' else field + ': '}{' '.join(str(message) for message in messages)}"
        for field, messages in form.errors.items()
    )


@router.post("/upload", auth=ApiKeyAuth(), url_name="api-upload", response={201: UploadOut, **error_responses(401)},
             openapi_extra=_form_request_body(SaeUploadForm))
def upload(request: ApiKeyRequest) -> Status[UploadOut]:
    """Upload an SAE (needs an x-api-key): the /upload/ page's fields and files; queues its dashboard run.
    A bad upload is a 400 `bad_upload` whose message names the field and the problem."""
    form = SaeUploadForm(request.POST, request.FILES)
    if not form.is_valid():
        raise ApiError(400, "bad_upload", _form_problem(form))
    try:
        sae = sae_upload(uploaded_by=request.auth, **form.service_arguments())
    except SaeUploadError as error:
        message = f"{error.field}: {error.message}" if error.field else error.message
        raise ApiError(400, "bad_upload", message) from error
    run = sae.runs.latest("created")
    page_url = reverse("sae", kwargs={"model_id": sae.language_model.slug, "sae_id": sae.slug})
    return Status(201, UploadOut.from_sae(sae, run, run_url=reverse("api-run", args=[run.pk]), page_url=page_url))


@router.get("/runs/{int:runId}", url_name="api-run", response={200: RunOut, **error_responses(404)})
def run_status(request: HttpRequest, run_id: Annotated[int, Path(alias="runId")]) -> RunOut:
    """A dashboard run's status and progress, and each shard's; its quality metrics once computed."""
    return RunOut.from_run(run_get(run_id))


# Owners' actions (the SAE's uploader, or staff; anyone else gets a 403): cancel a run, run the SAE again, delete it.
OWNER_ERRORS = error_responses(401, 403, 404, 409)


class SaeDeletedOut(ResponseSchema):
    """What a delete removed."""

    model_id: str = Field(serialization_alias="modelId")
    layer: str = Field(description="the SAE id")
    runs: int
    features: int
    explanations: int


@router.post("/runs/{int:runId}/cancel", auth=ApiKeyAuth(), url_name="api-run-cancel",
             response={200: RunOut, **OWNER_ERRORS})
def run_cancel(request: ApiKeyRequest, run_id: Annotated[int, Path(alias="runId")]) -> RunOut:
    """Cancel a run that has not finished (its workers stop within moments); 409 if it has finished. The SAE keeps
    the dashboards it had published."""
    return RunOut.from_run(dashboard_run_cancel(run=run_get(run_id), by=request.auth))


@router.post("/sae/{modelId}/{layer}/rerun", auth=ApiKeyAuth(), url_name="api-sae-rerun",
             response={201: RunOut, **OWNER_ERRORS})
def sae_rerun(request: ApiKeyRequest, model_id: Annotated[Identifier, Path(alias="modelId")],
              layer: Identifier) -> Status[RunOut]:
    """Run the SAE again with its newest run's dataset, sequences and parameters, cancelling a run still going;
    its published dashboards stay until the new run publishes."""
    return Status(201, RunOut.from_run(dashboard_run_again(sae=sae_get(model_id, layer), by=request.auth)))


@router.delete("/sae/{modelId}/{layer}", auth=ApiKeyAuth(), url_name="api-sae-delete",
               response={200: SaeDeletedOut, **OWNER_ERRORS})
def sae_remove(request: ApiKeyRequest, model_id: Annotated[Identifier, Path(alias="modelId")],
               layer: Identifier) -> SaeDeletedOut:
    """Delete the SAE, its runs, features and labels, and its files, cancelling a run still going."""
    deleted = sae_delete(sae=sae_get(model_id, layer), by=request.auth)
    return SaeDeletedOut(model_id=model_id, layer=layer, runs=deleted.runs, features=deleted.features,
                         explanations=deleted.explanations)


class VectorDashboardNew(RequestSchema):
    model_id: Identifier = Field(validation_alias="modelId")
    source: Identifier = Field(description="the vector's source, e.g. 0-vectors-resid-post")
    index: FeatureIndex
    dataset_id: Identifier | None = Field(
        None, validation_alias="datasetId", description="a dataset of the vector's model; its newest when left out")
    bias: JsonNumber = Field(0.0, description="added to h·v before the ReLU: the feature fires relu(h·v + bias)")


class VectorDashboardOut(ResponseSchema):
    """The SAE that holds the vector's dashboard (the vector is its feature `index`) and the run computing it."""

    message: str
    model_id: str = Field(serialization_alias="modelId")
    layer: str = Field(description="the dashboard SAE's id")
    index: int
    url: str = Field(description="the dashboard's feature page, once the run publishes")
    run: RunOut


@router.post("/vector/dashboard", auth=ApiKeyAuth(), url_name="api-vector-dashboard",
             response={201: VectorDashboardOut, **error_responses(401, 403, 404, 409)})
def vector_dashboard(request: ApiKeyRequest, body: VectorDashboardNew) -> Status[VectorDashboardOut]:
    """Compute a vector's dashboard (its owner's or staff's x-api-key) as feature 0 of an SAE
    `<layer>-vectors-<index>-dash`, on a dataset of its model; 409 if it has one already."""
    vector = vector_get(body.model_id, body.source, body.index)
    dataset = vector_dashboard_dataset(vector, body.dataset_id)
    try:
        sae = vector_dashboard_start(vectors=[vector], dataset=dataset, owner=request.auth, biases=[body.bias])
    except VectorDashboardRefused as error:
        raise ApiError(400, "bad_request", error.message) from error
    url = request.build_absolute_uri(reverse("feature", args=[sae.language_model.slug, sae.slug, 0]))
    return Status(201, VectorDashboardOut(message=f"Queued on {dataset.slug}.", model_id=sae.language_model.slug,
                                          layer=sae.slug, index=0, url=url, run=RunOut.from_run(sae.runs.get())))
