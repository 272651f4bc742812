"""The feature page's form for writing an explanation."""

from django import forms

from atlas.explanations.models import DESCRIPTION_MAX_LENGTH


class ExplanationForm(forms.Form):
    description = forms.CharField(
        max_length=DESCRIPTION_MAX_LENGTH,
        label="Explain this feature",
        widget=forms.TextInput(attrs={"placeholder": "e.g. words about happiness", "size": 60}),
    )
