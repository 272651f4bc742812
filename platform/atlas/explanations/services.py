"""Writing explanations: checked against the SAE's width, stored under (SAE, feature index)."""

from django.contrib.auth.models import User

from atlas.explanations.models import DESCRIPTION_MAX_LENGTH, Explanation
from atlas.saes.models import Sae


class ExplanationError(ValueError):
    """An explanation that cannot be stored; the message says what to change."""


def explanation_create(*, sae: Sae, index: int, description: str, author: User) -> Explanation:
    description = " ".join(description.split())
    if not description:
        raise ExplanationError("Write a short description of what the feature does.")
    if len(description) > DESCRIPTION_MAX_LENGTH:
        raise ExplanationError(
            f"Keep the description to {DESCRIPTION_MAX_LENGTH} characters; it has {len(description)}."
        )
    if not 0 <= index < sae.d_sae:
        raise ExplanationError(f"{sae} has features 0 to {sae.d_sae - 1}; there is no feature {index}.")
    return Explanation.objects.create(sae=sae, index=index, description=description, author=author)
