"""The page forms of lists: a new list on /lists, and a feature page's "Add to list"."""

from django import forms

from atlas.lists.models import DESCRIPTION_MAX_LENGTH, NAME_MAX_LENGTH, NOTE_MAX_LENGTH


class ListForm(forms.Form):
    name = forms.CharField(max_length=NAME_MAX_LENGTH)
    description = forms.CharField(max_length=DESCRIPTION_MAX_LENGTH, required=False, widget=forms.Textarea)
    public = forms.BooleanField(required=False, initial=True, label="Public (anyone with the link may read it)")


class ListAddForm(forms.Form):
    """A feature page's form: which of the user's lists, and a note; the feature comes from the page's address."""

    list_id = forms.CharField(max_length=100)
    model_id = forms.SlugField(max_length=100)
    sae_id = forms.SlugField(max_length=100)
    index = forms.IntegerField(min_value=0, max_value=2**31 - 1)
    note = forms.CharField(max_length=NOTE_MAX_LENGTH, required=False)
