"""The SAE page's table controls: sort, filters and the dead-feature toggle, read from the query string."""

from django import forms

from atlas.features.selectors import FeatureListing, FeatureSort


class FeatureListForm(forms.Form):
    sort = forms.ChoiceField(choices=[(sort.value, sort.value) for sort in FeatureSort], required=False)
    order = forms.ChoiceField(choices=[("asc", "ascending"), ("desc", "descending")], required=False)
    density_min = forms.FloatField(required=False, label="log₁₀ density ≥", max_value=0)
    density_max = forms.FloatField(required=False, label="log₁₀ density ≤", max_value=0)
    act_min = forms.FloatField(required=False, label="max activation ≥")
    act_max = forms.FloatField(required=False, label="max activation ≤")
    label = forms.CharField(required=False, max_length=200)
    dead = forms.BooleanField(required=False, label="show dead features")

    def listing(self) -> FeatureListing:
        """The listing the valid fields ask for; an invalid field falls back to its default."""
        data = self.cleaned_data if self.is_bound else {}
        return FeatureListing(
            sort=FeatureSort(data.get("sort") or FeatureSort.INDEX),
            descending=data.get("order") == "desc",
            log_density_min=data.get("density_min"),
            log_density_max=data.get("density_max"),
            max_act_min=data.get("act_min"),
            max_act_max=data.get("act_max"),
            label=(data.get("label") or "").strip(),
            show_dead=bool(data.get("dead")),
        )
