"""The JSON shapes of the concept-search and detector routes: what they take, under camelCase names as Neuronpedia
writes its own, and what they answer."""

from typing import Annotated, Any, Literal

from django.conf import settings
from pydantic import Field, StrictBool

from atlas.jsonapi import Identifier, JsonInteger, RequestSchema, ResponseSchema, StorableIdentifier, StorableText

SOURCES_MAX = 8
DETECTOR_NAME_MAX = 200
CANDIDATE_NAME_MAX = 100
DATASET_TOKENS_DEFAULT = 64
DATASET_TOKENS_MAX = 512

Text = Annotated[StorableText, Field(max_length=settings.ATLAS_LIVE_MAX_CHARACTERS)]
Texts = Annotated[list[Text], Field(max_length=settings.ATLAS_CONCEPT_MAX_TEXTS)]
Pooling = Literal["max", "mean"]


class ConceptSearchIn(RequestSchema):
    model_id: Identifier = Field(validation_alias="modelId")
    sources: Annotated[list[StorableIdentifier], Field(min_length=1, max_length=SOURCES_MAX)] = Field(
        description="SAE ids of the model (e.g. 5-res-demo); each is searched over the same texts")
    positives: Annotated[Texts, Field(min_length=1)]
    negatives: Texts = Field(default_factory=list)
    negatives_dataset: Identifier | None = Field(
        default=None, validation_alias="negativesDataset",
        description="a dataset of the model whose sequences are added to the negatives")
    dataset_negatives: Annotated[JsonInteger, Field(ge=0, le=settings.ATLAS_CONCEPT_MAX_TEXTS)] | None = Field(
        default=None, validation_alias="datasetNegatives",
        description="how many dataset sequences (default: as many as the positives)")
    dataset_tokens: Annotated[JsonInteger, Field(ge=4, le=DATASET_TOKENS_MAX)] = Field(
        default=DATASET_TOKENS_DEFAULT, validation_alias="datasetTokens",
        description="tokens of each dataset sequence")
    pooling: Pooling = "max"


class ConceptSearchOut(ResponseSchema):
    id: str
    status: str
    url: str = Field(description="the result page")
    model_id: str = Field(serialization_alias="modelId")
    sources: list[str]
    pooling: str
    n_positive: int = Field(serialization_alias="nPositive")
    n_negative: int = Field(serialization_alias="nNegative")
    progress: dict[str, int] = Field(description="texts run so far and in all (SAEs x texts)")
    error: str | None
    results: list[dict[str, Any]] = Field(
        description="per source: features (index, auroc, meanPositive, meanNegative, meanDifference, "
                    "frequencyPositive, frequencyNegative, label, density, topTokens), per-text scores of the top "
                    "10, probes (mass-mean and logistic: held-out accuracy and AUROC, direction, cosines with the "
                    "top features' decoder and encoder, nearest features), bestFeature, sparseProbing, detectors")


class DetectorNewIn(RequestSchema):
    search_id: Identifier = Field(validation_alias="searchId")
    source: Identifier
    candidate: Annotated[StorableText, Field(max_length=CANDIDATE_NAME_MAX)] = Field(
        description="one of the search's detectors by name, e.g. 'top 5 features (logistic)'")
    name: Annotated[StorableText, Field(min_length=1, max_length=DETECTOR_NAME_MAX)]


class DetectorOut(ResponseSchema):
    id: str
    name: str
    url: str
    model_id: str = Field(serialization_alias="modelId")
    source: str
    kind: str
    pooling: str
    features: list[int]
    weights: list[float]
    bias: float
    threshold: float
    evaluation: dict[str, Any] = Field(
        description="on the search's held-out texts: nPositive, nNegative, accuracy, precision, recall, auroc, "
                    "rocFpr, rocTpr")


class DetectIn(RequestSchema):
    detector: Identifier
    texts: Annotated[list[Text], Field(min_length=1, max_length=settings.ATLAS_DETECT_MAX_TEXTS)]
    labels: list[StrictBool] | None = Field(
        default=None, description="one per text: with them the answer holds the detector's evaluation on them")


class DetectionOut(ResponseSchema):
    text: str
    score: float
    detected: bool
    tokens: list[str]
    contributions: list[float] = Field(description="per token: weights x its activations (0 at BOS)")
    strongest_tokens: list[int] = Field(serialization_alias="strongestTokens",
                                        description="per feature, the token max pooling took its value from")


class DetectOut(ResponseSchema):
    detector: str
    threshold: float
    results: list[DetectionOut]
    evaluation: dict[str, Any] | None
