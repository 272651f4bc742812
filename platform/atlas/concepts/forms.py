"""The concept-search form: two sets of texts, pasted one per line or uploaded (.txt: one per line; .jsonl: one
{"text": ...} per line), the SAEs, the pooling, and optionally a dataset whose sequences join the negatives."""

from django import forms
from django.conf import settings

from atlas.concepts.models import Pooling

TEXTS_HELP = "One text per line; or upload a .txt (one per line) or .jsonl (one {\"text\": ...} per line)."


class ConceptSearchForm(forms.Form):
    model = forms.CharField(max_length=100)
    sources = forms.CharField(max_length=2000, help_text="SAE ids of the model, separated by commas")
    pooling = forms.ChoiceField(choices=Pooling.choices, initial=Pooling.MAX)
    positives = forms.CharField(widget=forms.Textarea, required=False, help_text=TEXTS_HELP)
    positives_file = forms.FileField(required=False)
    negatives = forms.CharField(widget=forms.Textarea, required=False, help_text=TEXTS_HELP)
    negatives_file = forms.FileField(required=False)
    negatives_dataset = forms.CharField(max_length=100, required=False)
    dataset_negatives = forms.IntegerField(required=False, min_value=0, max_value=settings.ATLAS_CONCEPT_MAX_TEXTS)


class DetectorSaveForm(forms.Form):
    source = forms.CharField(max_length=100)
    candidate = forms.CharField(max_length=100)
    name = forms.CharField(max_length=200)
