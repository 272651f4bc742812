"""The JSON shapes of feature lists, under the names the `neuronpedia` client's ListRequest sends and reads
(`listId`, `featuresToAdd`, a list's features under `neurons`, each with `modelId`, `layer`, `index`)."""

from typing import Annotated, Self

from pydantic import Field

from atlas.jsonapi import NO_NUL_PATTERN, FeatureIndex, Identifier, RequestSchema, ResponseSchema
from atlas.lists.models import (
    DESCRIPTION_MAX_LENGTH,
    LIST_FEATURES_MAX,
    NAME_MAX_LENGTH,
    NOTE_MAX_LENGTH,
    FeatureList,
    ListItem,
)

ListId = Annotated[Identifier, Field(description="the list's id, as list/new answered it")]
# Free text that may be left out or null (the client sends "" when it has none).
Description = Annotated[str, Field(max_length=DESCRIPTION_MAX_LENGTH, json_schema_extra={"pattern": NO_NUL_PATTERN})]
Note = Annotated[str, Field(max_length=NOTE_MAX_LENGTH, json_schema_extra={"pattern": NO_NUL_PATTERN})]


class ListNew(RequestSchema):
    # list_create refuses a name of whitespace alone.
    name: str = Field(min_length=1, max_length=NAME_MAX_LENGTH, json_schema_extra={"pattern": NO_NUL_PATTERN})
    description: Description | None = ""
    public: bool = Field(True, validation_alias="isPublic", strict=True,
                         description="public lists are readable by anyone with the id; private ones by you alone")


class ListFeatureIn(RequestSchema):
    model_id: Identifier = Field(validation_alias="modelId")
    layer: Identifier = Field(description="the feature's SAE (source) id, e.g. 5-res-demo")
    index: FeatureIndex
    note: Note | None = Field("", validation_alias="description",
                              description="your note on the feature, shown on the list")


class ListAddFeatures(RequestSchema):
    list_id: ListId = Field(validation_alias="listId")
    features: list[ListFeatureIn] = Field(validation_alias="featuresToAdd", min_length=1,
                                          max_length=LIST_FEATURES_MAX)


class ListAddress(RequestSchema):
    list_id: ListId = Field(validation_alias="listId")


class ListFeatureAddress(RequestSchema):
    list_id: ListId = Field(validation_alias="listId")
    model_id: Identifier = Field(validation_alias="modelId")
    layer: Identifier
    index: FeatureIndex


class ListFeatureOut(ResponseSchema):
    model_id: str = Field(serialization_alias="modelId")
    layer: str
    index: str
    note: str = Field(serialization_alias="description")
    added_at: str = Field(serialization_alias="addedAt", json_schema_extra={"format": "date-time"})

    @classmethod
    def from_item(cls, item: ListItem) -> Self:
        return cls(model_id=item.sae.language_model.slug, layer=item.sae.slug, index=str(item.index),
                   note=item.note, added_at=item.created.isoformat())


class ListSummaryOut(ResponseSchema):
    """A list as list/list answers: its facts and how many features it holds."""

    id: str
    name: str
    description: str
    public: bool = Field(serialization_alias="isPublic")
    owner_username: str = Field(serialization_alias="ownerUsername")
    created_at: str = Field(serialization_alias="createdAt", json_schema_extra={"format": "date-time"})
    url: str
    feature_count: int = Field(serialization_alias="featureCount")

    @classmethod
    def from_list(cls, feature_list: FeatureList, *, url: str, feature_count: int) -> Self:
        return cls(id=feature_list.pk, name=feature_list.name, description=feature_list.description,
                   public=feature_list.public, owner_username=feature_list.owner.username,
                   created_at=feature_list.created.isoformat(), url=url, feature_count=feature_count)


class ListOut(ListSummaryOut):
    """A list with its features, in the order they were added."""

    neurons: list[ListFeatureOut]

    @classmethod
    def from_items(cls, feature_list: FeatureList, items: list[ListItem], *, url: str) -> Self:
        summary = ListSummaryOut.from_list(feature_list, url=url, feature_count=len(items))
        return cls(**summary.model_dump(), neurons=[ListFeatureOut.from_item(item) for item in items])
