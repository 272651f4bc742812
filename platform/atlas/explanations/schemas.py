"""The JSON shapes of explanations: Neuronpedia's explanation fields, and the body of POST /api/explanation/new."""

from typing import Self

from pydantic import Field

from atlas.explanations.models import DESCRIPTION_MAX_LENGTH, Explanation
from atlas.jsonapi import NO_NUL_PATTERN, FeatureIndex, Identifier, RequestSchema, ResponseSchema


class ExplanationOut(ResponseSchema):
    """`layer` is the SAE id, as everywhere in Neuronpedia's API."""

    id: str
    model_id: str = Field(serialization_alias="modelId")
    layer: str
    index: int
    description: str
    author_username: str | None = Field(serialization_alias="authorUsername")
    # ISO 8601 as datetime.isoformat() writes it, the form exports to Neuronpedia carry too.
    created_at: str = Field(serialization_alias="createdAt", json_schema_extra={"format": "date-time"})

    @classmethod
    def from_explanation(cls, explanation: Explanation) -> Self:
        return cls(
            id=str(explanation.pk),
            model_id=explanation.sae.language_model.slug,
            layer=explanation.sae.slug,
            index=explanation.index,
            description=explanation.description,
            author_username=explanation.author.username if explanation.author else None,
            created_at=explanation.created.isoformat(),
        )


class ExplanationCreated(ResponseSchema):
    explanation: ExplanationOut


class ExplanationNew(RequestSchema):
    model_id: Identifier = Field(validation_alias="modelId")
    layer: Identifier = Field(description="the SAE id, e.g. 5-res-demo")
    index: FeatureIndex
    # Its length is checked by explanation_create once whitespace is collapsed, so the schema only documents it.
    description: str = Field(json_schema_extra={"minLength": 1, "maxLength": DESCRIPTION_MAX_LENGTH,
                                                "pattern": NO_NUL_PATTERN})
