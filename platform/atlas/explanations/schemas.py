"""The JSON shapes of explanations: Neuronpedia's explanation fields, the body of POST /api/explanation/new, and
POST /api/explanation/search's body and answer."""

from typing import Annotated, Self

from pydantic import AfterValidator, Field, StringConstraints
from pydantic_core import PydanticCustomError

from atlas.explanations.models import DESCRIPTION_MAX_LENGTH, Explanation
from atlas.jsonapi import (
    NO_NUL_PATTERN,
    POSTGRES_INTEGER_MAX,
    FeatureIndex,
    Identifier,
    JsonInteger,
    RequestSchema,
    ResponseSchema,
)


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


# Neuronpedia's page of label search results (its MAX_EXPLANATION_SEARCH_RESULTS).
SEARCH_PAGE_SIZE = 20
# More SAEs than any model has layers and hooks; a body naming more is refused before any lookup.
SEARCH_LAYERS_MAX = 256


def _search_query(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("query_empty", "is empty; type words to search the labels for")
    return text


# (The length before the validator, so that a long query is refused as a string too long, not as a list.)
SearchQueryText = Annotated[str, StringConstraints(max_length=DESCRIPTION_MAX_LENGTH), AfterValidator(_search_query),
                            Field(json_schema_extra={"minLength": 1,
                                                     "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$"})]


class ExplanationSearch(RequestSchema):
    """POST /api/explanation/search's body, as Neuronpedia's: `layers` are SAE ids (every SAE of the model when left
    out), `offset` the first result wanted."""

    model_id: Identifier = Field(validation_alias="modelId")
    query: SearchQueryText = Field(description="words, \"phrases\" and -excluded words, as a web search takes them")
    layers: list[Identifier] | None = Field(None, min_length=1, max_length=SEARCH_LAYERS_MAX)
    offset: JsonInteger = Field(0, ge=0, le=POSTGRES_INTEGER_MAX)


class ExplanationSearchRequestOut(ResponseSchema):
    model_id: str = Field(serialization_alias="modelId")
    query: str
    layers: list[str] = Field(description="the SAEs searched: those asked, or every SAE of the model")
    offset: int


class ExplanationSearchOut(ResponseSchema):
    """A page of matching labels, best match first; `nextOffset` asks for the next page (null on the last)."""

    request: ExplanationSearchRequestOut
    results: list[ExplanationOut]
    results_count: int = Field(serialization_alias="resultsCount")
    has_more: bool = Field(serialization_alias="hasMore")
    next_offset: int | None = Field(serialization_alias="nextOffset")
