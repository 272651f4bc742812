"""The SAE upload form: files, model, hook point, dataset and run parameters."""

from typing import Any

from django import forms

from atlas.datasets.models import Dataset
from atlas.lms.models import LanguageModel
from atlas.saes.services import RunParams
from workers.compute.params import DashboardParams


class SaeUploadForm(forms.Form):
    language_model = forms.ModelChoiceField(
        queryset=LanguageModel.objects.all(), to_field_name="slug", label="Model", empty_label=None
    )
    cfg_file = forms.FileField(required=False, label="cfg.json", help_text="or dictionary_learning's config.json")
    weights_file = forms.FileField(
        required=False, label="sae_weights.safetensors", help_text="or dictionary_learning's ae.pt"
    )
    archive = forms.FileField(
        required=False,
        label="or one archive",
        help_text=".zip or .tar.gz of the SAELens SAE directory or the dictionary_learning trainer folder",
    )
    hook_name = forms.CharField(
        required=False,
        max_length=200,
        help_text="Leave empty to use the hook_name in cfg.json.",
        widget=forms.TextInput(attrs={"list": "hook-names", "placeholder": "blocks.5.hook_resid_post"}),
    )
    slug = forms.SlugField(
        required=False,
        max_length=100,
        label="SAE id",
        help_text='Like Neuronpedia\'s "6-res-jb"; default <layer>-res-<width>.',
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    dataset = forms.ModelChoiceField(queryset=Dataset.objects.all(), to_field_name="slug", empty_label=None)
    n_sequences = forms.IntegerField(
        required=False, min_value=1, label="Sequences", help_text="Empty: every sequence of the dataset."
    )
    # Left out (as API clients may), the example settings take the defaults the page shows.
    top_k = forms.IntegerField(
        required=False, initial=DashboardParams.top_k, min_value=1, max_value=200, label="Top examples"
    )
    context_before = forms.IntegerField(
        required=False, initial=DashboardParams.context_before, min_value=0, max_value=1024
    )
    context_after = forms.IntegerField(
        required=False, initial=DashboardParams.context_after, min_value=0, max_value=1024
    )

    def clean(self) -> dict[str, Any] | None:
        cleaned = super().clean()
        data = self.cleaned_data
        if data.get("archive") and (data.get("cfg_file") or data.get("weights_file")):
            # Unpacking the archive over the files would silently pick one of the two SAEs.
            self.add_error("archive", "Send either cfg.json and the weights (cfg_file, weights_file), or one "
                                      "archive, not both; leave out the one you did not mean to send.")
        return cleaned

    def service_arguments(self) -> dict[str, Any]:
        """The cleaned fields as sae_upload's keyword arguments."""
        data = self.cleaned_data
        return {
            "language_model": data["language_model"],
            "dataset": data["dataset"],
            "cfg_file": data["cfg_file"],
            "weights_file": data["weights_file"],
            "archive": data["archive"],
            "hook_name": data["hook_name"],
            "slug": data["slug"],
            "description": data["description"],
            "params": RunParams(
                n_sequences=data["n_sequences"],
                top_k=_or_default(data["top_k"], DashboardParams.top_k),
                context_before=_or_default(data["context_before"], DashboardParams.context_before),
                context_after=_or_default(data["context_after"], DashboardParams.context_after),
            ),
        }


def _or_default(value: int | None, default: int) -> int:
    return default if value is None else value
