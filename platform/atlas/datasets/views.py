"""The dataset upload page (login required)."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render

from atlas.datasets.forms import DatasetUploadForm
from atlas.datasets.models import Dataset
from atlas.datasets.services import DatasetError, dataset_create, dataset_documents_from_file


@login_required
def dataset_new(request: HttpRequest) -> HttpResponse:
    form = DatasetUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            dataset_create(
                slug=data["slug"],
                language_model=data["language_model"],
                documents=dataset_documents_from_file(data["text_file"]),
                source_kind=Dataset.SourceKind.UPLOAD,
                source=data["text_file"].name,
                context_length=data["context_length"],
                max_sequences=data["max_sequences"],
            )
        except DatasetError as error:
            form.add_error(None, str(error))
        else:
            return redirect("upload")
    return render(request, "dataset_new.html", {"form": form})
