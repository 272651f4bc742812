"""The JSON shapes of vectors, under the names the `neuronpedia` client's VectorRequest sends and reads."""

from typing import Annotated, Self

from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from atlas.jsonapi import (
    NO_NUL_PATTERN,
    FeatureIndex,
    Identifier,
    JsonInteger,
    JsonNumber,
    RequestSchema,
    ResponseSchema,
)
from atlas.vectors.models import (
    DEFAULT_STRENGTH,
    HOOK_SOURCE_SUFFIX,
    LABEL_MAX_LENGTH,
    STRENGTH_LIMIT,
    VECTOR_MAX_LENGTH,
    Vector,
)
from atlas.vectors.selectors import vector_values_shown


def _hook_type(value: str) -> str:
    if value not in HOOK_SOURCE_SUFFIX:
        raise PydanticCustomError("hook_type", "must be one of {names}", {"names": ", ".join(HOOK_SOURCE_SUFFIX)})
    return value


# (The enum written in, as AfterValidator keeps the schema a plain string; a Literal's error would not say
# "must be a string" for a number.)
HookType = Annotated[str, AfterValidator(_hook_type), Field(json_schema_extra={"enum": list(HOOK_SOURCE_SUFFIX)})]


class VectorNew(RequestSchema):
    model_id: Identifier = Field(validation_alias="modelId")
    layer_number: JsonInteger = Field(validation_alias="layerNumber", ge=0, le=10_000)
    hook_type: HookType = Field(validation_alias="hookType")
    # Its width is checked against the model's hook (and every value for float32 range) by vector_create.
    vector: list[JsonNumber] = Field(min_length=1, max_length=VECTOR_MAX_LENGTH)
    # The client sends null when asked for no default; null is Neuronpedia's default, 10.
    default_strength: JsonNumber | None = Field(
        DEFAULT_STRENGTH, validation_alias="vectorDefaultSteerStrength", ge=-STRENGTH_LIMIT, le=STRENGTH_LIMIT)
    # vector_create refuses a label of whitespace alone.
    label: str = Field(validation_alias="vectorLabel", min_length=1, max_length=LABEL_MAX_LENGTH,
                       json_schema_extra={"pattern": NO_NUL_PATTERN})


class VectorAddress(RequestSchema):
    model_id: Identifier = Field(validation_alias="modelId")
    source: Identifier = Field(description="the vector's source, e.g. 0-vectors-resid-post")
    index: FeatureIndex


class VectorCreatedOut(ResponseSchema):
    """POST /api/vector/new's `vector`, as Neuronpedia names its fields there (they differ from vector/get's)."""

    model_id: str = Field(serialization_alias="modelId")
    source: str
    index: str
    label: str
    hook_name: str = Field(serialization_alias="hookName")
    values: list[float]
    default_strength: float = Field(serialization_alias="defaultSteerStrength")
    created_at: str = Field(serialization_alias="createdAt", json_schema_extra={"format": "date-time"})

    @classmethod
    def from_vector(cls, vector: Vector) -> Self:
        return cls(model_id=vector.language_model.slug, source=vector.source, index=str(vector.pk),
                   label=vector.label, hook_name=vector.hook_name, values=vector_values_shown(vector),
                   default_strength=vector.default_strength, created_at=vector.created.isoformat())


class VectorCreated(ResponseSchema):
    message: str
    url: str
    vector: VectorCreatedOut


class VectorOut(ResponseSchema):
    """A vector as vector/get and vector/list-owned answer: `layer` is its source, as everywhere in Neuronpedia."""

    model_id: str = Field(serialization_alias="modelId")
    layer: str
    index: str
    label: str = Field(serialization_alias="vectorLabel")
    hook_name: str = Field(serialization_alias="hookName")
    values: list[float] = Field(serialization_alias="vector")
    default_strength: float = Field(serialization_alias="vectorDefaultSteerStrength")
    owner_username: str = Field(serialization_alias="creatorUsername")
    created_at: str = Field(serialization_alias="createdAt", json_schema_extra={"format": "date-time"})

    @classmethod
    def from_vector(cls, vector: Vector) -> Self:
        return cls(model_id=vector.language_model.slug, layer=vector.source, index=str(vector.pk),
                   label=vector.label, hook_name=vector.hook_name, values=vector_values_shown(vector),
                   default_strength=vector.default_strength, owner_username=vector.owner.username,
                   created_at=vector.created.isoformat())


class VectorFound(ResponseSchema):
    vector: VectorOut


class VectorsOwned(ResponseSchema):
    vectors: list[VectorOut]


class VectorDeleted(ResponseSchema):
    message: str
