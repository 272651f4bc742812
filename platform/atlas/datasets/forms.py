"""The dataset form: a text file tokenized for one model."""

from django import forms

from atlas.lms.models import LanguageModel


class DatasetUploadForm(forms.Form):
    slug = forms.SlugField(max_length=100, label="Name")
    language_model = forms.ModelChoiceField(
        queryset=LanguageModel.objects.all(), to_field_name="slug", label="Model", empty_label=None
    )
    text_file = forms.FileField(label="Text", help_text=".txt (paragraphs) or .jsonl (one {\"text\": ...} a line)")
    context_length = forms.IntegerField(initial=128, min_value=8, max_value=8192)
    max_sequences = forms.IntegerField(required=False, min_value=1, label="At most this many sequences")
