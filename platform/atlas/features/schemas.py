"""The JSON shapes of features: Neuronpedia's feature and activation fields, live activations of typed text, and
the bodies the feature endpoints take."""

from typing import Annotated, Self

from django.conf import settings
from pydantic import AfterValidator, AliasChoices, BeforeValidator, ConfigDict, Field, StrictBool, model_validator
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import PydanticCustomError

from atlas.explanations.schemas import ExplanationOut
from atlas.features.live import FeatureOnText, LiveActivations, TextAnomaly, TokenFeatures
from atlas.features.selectors import ExampleView, FeatureBrief, FeatureView
from atlas.jsonapi import (
    POSTGRES_INTEGER_MAX,
    FeatureIndex,
    Identifier,
    JsonInteger,
    RequestSchema,
    ResponseSchema,
    null_means,
)
from atlas.saes.models import Sae

# A bound on one POST /api/features, so a single request cannot ask the server to decode a whole SAE.
FEATURES_PER_REQUEST = 100
# POST /api/search-all returns this many features unless numResults says otherwise, and never more than the max.
SEARCH_RESULTS_DEFAULT = 20
SEARCH_RESULTS_MAX = 100
# POST /api/search-topk-by-token's defaults and bound, Neuronpedia's: features per token, and the density above
# which a feature is left out (0 leaves none out).
TOPK_BY_TOKEN_DEFAULT = 10
TOPK_BY_TOKEN_MAX = 20
DENSITY_THRESHOLD_DEFAULT = 0.01
# Neuronpedia calls an SAE `source` in live requests and `layer` elsewhere; either is taken.
SOURCE_NAMES = AliasChoices("source", "layer")


def _live_text(text: str) -> str:
    # The limit is read per request: it is a setting, which tests and deployments change.
    limit = settings.ATLAS_LIVE_MAX_CHARACTERS
    if not text.strip():
        raise PydanticCustomError("text_empty", "is empty; type some words")
    if len(text) > limit:
        raise PydanticCustomError("text_too_long", "has {length} characters; send at most {limit}",
                                  {"length": len(text), "limit": limit})
    return text


# Typed text for a live request: some non-blank character, within the server's limit.
LiveText = Annotated[
    str,
    AfterValidator(_live_text),
    # Some character that is not blank, and no NUL (RequestSchema refuses one).
    Field(json_schema_extra={"minLength": 1, "maxLength": settings.ATLAS_LIVE_MAX_CHARACTERS,
                             "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$"}),
]
def _default_if_null(wanted: object) -> object:
    """Null asks for the default, as a field left out does."""
    return SEARCH_RESULTS_DEFAULT if wanted is None else wanted


ResultsWanted = Annotated[JsonInteger, BeforeValidator(_default_if_null)]



def _density_number(value: object) -> object:
    """A JSON number (not a bool, nor an integer too long to read); null asks for the default."""
    if value is None:
        return DENSITY_THRESHOLD_DEFAULT
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("density_type", "must be a number from 0 (no filter) up to, but not including, 1")
    return float(value)


def _density_range(value: float) -> float:
    if not 0 <= value < 1:
        raise PydanticCustomError("density_range", "is {value}; send 0 (no filter) or a density above 0 and below 1",
                                  {"value": value})
    return value


# Neuronpedia's densityThreshold: features active on more than this share of tokens are left out; 0 keeps them all.
DensityThreshold = Annotated[
    float,
    Field(json_schema_extra={"type": "number", "minimum": 0, "exclusiveMaximum": 1}),
    BeforeValidator(_density_number),
    AfterValidator(_density_range),
]


class FeatureLookup(RequestSchema):
    model_id: Identifier = Field(validation_alias="modelId")
    layer: Identifier = Field(description="the SAE id, e.g. 5-res-demo")
    index: FeatureIndex


FeatureLookups = Annotated[list[FeatureLookup], Field(min_length=1, max_length=FEATURES_PER_REQUEST)]


class FeaturesOffset(RequestSchema):
    model_id: Identifier = Field(validation_alias="modelId")
    layer: Identifier
    offset: JsonInteger = Field(ge=0, le=POSTGRES_INTEGER_MAX, description="the first index of the page")


class LiveFeature(RequestSchema):
    model_id: Identifier = Field(validation_alias="modelId")
    source: Identifier = Field(validation_alias=SOURCE_NAMES, description="the SAE id; `layer` is taken too")
    index: FeatureIndex


class ActivationNew(RequestSchema):
    feature: LiveFeature
    custom_text: LiveText = Field(validation_alias="customText")


class SearchAll(RequestSchema):
    """One SAE by `source` (or `layer`), or every SAE of the model in `sourceSet` (ids ending in -<set>)."""

    # The document says what the validator below checks: a body names one or the other.
    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["source"]}, {"required": ["sourceSet"]}]})

    model_id: Identifier = Field(validation_alias="modelId")
    # Left out, not null, in the document: the validator below refuses a body naming neither.
    source: Identifier | SkipJsonSchema[None] = Field(None, validation_alias=SOURCE_NAMES, description="one SAE")
    source_set: Identifier | SkipJsonSchema[None] = Field(
        None, validation_alias="sourceSet", description="every SAE of the model whose id ends in -<sourceSet>")
    text: LiveText
    num_results: ResultsWanted = Field(SEARCH_RESULTS_DEFAULT, ge=1, le=SEARCH_RESULTS_MAX,
                                       validation_alias="numResults")

    @model_validator(mode="after")
    def _names_saes(self) -> Self:
        if self.source is None and self.source_set is None:
            raise PydanticCustomError("source_missing", "send 'source' (one SAE) or 'sourceSet' (SAEs named "
                                                        "<layer>-<set>)")
        return self


class TopkByToken(RequestSchema):
    """Typed text, one SAE: each token's strongest features, as Neuronpedia's search-topk-by-token takes it."""

    model_id: Identifier = Field(validation_alias="modelId")
    source: Identifier = Field(validation_alias=SOURCE_NAMES, description="the SAE id; `layer` is taken too")
    text: LiveText
    num_results: Annotated[JsonInteger, null_means(TOPK_BY_TOKEN_DEFAULT)] = Field(
        TOPK_BY_TOKEN_DEFAULT, ge=1, le=TOPK_BY_TOKEN_MAX, validation_alias="numResults",
        description="features per token")
    ignore_bos: Annotated[StrictBool, null_means(True)] = Field(
        True, validation_alias="ignoreBos", description="leave out BOS and the tokenizer's other special tokens")
    density_threshold: DensityThreshold = Field(
        DENSITY_THRESHOLD_DEFAULT, validation_alias="densityThreshold",
        description="leave out features denser than this (and those with no published density); 0: no filter")


class ActivationOut(ResponseSchema):
    """One example: a window of tokens and the feature's value on each."""

    tokens: list[str]
    values: list[float]
    max_value: float = Field(serialization_alias="maxValue")
    max_value_token_index: int = Field(serialization_alias="maxValueTokenIndex")
    min_value: float = Field(serialization_alias="minValue")
    # Neuronpedia marks top examples with bin -1; interval examples carry their interval (binMin, binMax].
    bin_min: float = Field(serialization_alias="binMin", description="-1 for top examples")
    bin_max: float = Field(serialization_alias="binMax")
    bin_contains: float = Field(serialization_alias="binContains",
                                description="the share of active tokens in the interval; -1 for top examples")
    qualifying_token_index: int = Field(serialization_alias="qualifyingTokenIndex",
                                        description="the token the example was chosen for (top: its peak)")

    @classmethod
    def from_example(cls, example: ExampleView) -> Self:
        return cls(
            tokens=example.tokens,
            values=example.values,
            max_value=example.max_value,
            max_value_token_index=example.max_value_token_index,
            min_value=min(example.values, default=0.0),
            bin_min=_bin_or_top(example.bin_min),
            bin_max=_bin_or_top(example.bin_max),
            bin_contains=_bin_or_top(example.bin_contains),
            qualifying_token_index=example.focus,
        )


def _bin_or_top(value: float | None) -> float:
    """A top example has no interval: Neuronpedia writes -1 in its interval's fields."""
    return -1 if value is None else value


class FeatureOut(ResponseSchema):
    """A feature's dashboard in Neuronpedia's field names, so existing clients read it unchanged."""

    model_id: str = Field(serialization_alias="modelId")
    layer: str = Field(description="the SAE id")
    index: int
    hook_name: str = Field(serialization_alias="hookName")
    max_act_approx: float = Field(serialization_alias="maxActApprox")
    frac_nonzero: float = Field(description="the share of tokens the feature is active on")
    pos_str: list[str] = Field(description="the tokens the feature's decoder direction promotes most")
    pos_values: list[float]
    neg_str: list[str] = Field(description="the tokens it suppresses most")
    neg_values: list[float]
    freq_hist_data_bar_heights: list[int]
    freq_hist_data_bar_values: list[float] = Field(description="the activation histogram's bin centres")
    logits_hist_data_bar_heights: list[int]
    logits_hist_data_bar_values: list[float]
    activations: list[ActivationOut] = Field(description="top examples, then interval examples, highest first")
    topk_cos_sim_indices: list[int] = Field(serialization_alias="topkCosSimIndices",
                                            description="the SAE's features with the most similar decoder "
                                                        "directions (itself excluded)")
    topk_cos_sim_values: list[float] = Field(serialization_alias="topkCosSimValues",
                                             description="their decoder cosine similarities, descending")
    explanations: list[ExplanationOut]

    @classmethod
    def from_view(cls, view: FeatureView) -> Self:
        feature, sae = view.feature, view.sae
        return cls(
            model_id=sae.language_model.slug,
            layer=sae.slug,
            index=feature.index,
            hook_name=sae.hook_name,
            max_act_approx=feature.max_act,
            frac_nonzero=feature.frac_nonzero,
            pos_str=[token for token, _ in view.pos_logits],
            pos_values=[value for _, value in view.pos_logits],
            neg_str=[token for token, _ in view.neg_logits],
            neg_values=[value for _, value in view.neg_logits],
            freq_hist_data_bar_heights=view.act_hist.heights,
            freq_hist_data_bar_values=view.act_hist.centers,
            logits_hist_data_bar_heights=view.logit_hist.heights,
            logits_hist_data_bar_values=view.logit_hist.centers,
            activations=[ActivationOut.from_example(example) for example in view.top + view.intervals],
            topk_cos_sim_indices=[index for index, _ in view.neighbours],
            topk_cos_sim_values=[cosine for _, cosine in view.neighbours],
            explanations=[ExplanationOut.from_explanation(explanation) for explanation in view.explanations],
        )


class TextActivationOut(ResponseSchema):
    """A feature's activation on each token of typed text."""

    model_id: str = Field(serialization_alias="modelId")
    layer: str = Field(description="the SAE id")
    index: int
    tokens: list[str] = Field(description="BOS first")
    values: list[float]
    max_value: float = Field(serialization_alias="maxValue",
                             description="the strongest activation on any token but BOS")
    max_value_token_index: int = Field(serialization_alias="maxValueTokenIndex")
    min_value: float = Field(serialization_alias="minValue")

    @classmethod
    def from_live(cls, sae: Sae, live: LiveActivations, found: FeatureOnText) -> Self:
        return cls(
            model_id=sae.language_model.slug,
            layer=sae.slug,
            index=found.index,
            tokens=live.tokens,
            values=found.values,
            max_value=found.max_value,
            max_value_token_index=found.max_value_token_index,
            min_value=min(found.values, default=0.0),
        )


def _peak(values: list[float | None] | None) -> int | None:
    """The token with the highest score (the first of equals), BOS and unknown scores aside; None if none."""
    known = [(value, -position) for position, value in enumerate(values or []) if value is not None]
    return -max(known)[1] if known else None


def _at(values: list[float | None] | None, position: int | None) -> float | None:
    return None if values is None or position is None else values[position]


class AnomalyOut(ResponseSchema):
    """How unusual each token of typed text is to the SAE, and against its dataset's own tokens. Per-token lists
    start with BOS, whose entries are null: it counts nowhere, as in the dashboards."""

    reconstruction_error: list[float | None] = Field(
        serialization_alias="reconstructionError",
        description="|x - x_hat|^2 / |x|^2 at the SAE's hook: the share of the activation the SAE misses")
    rarity: list[float | None] | None = Field(
        description="the activation-weighted mean of -ln(density) over the features that fire, in nats, densities "
                    "from the published run (0 when nothing fires); null without a published run")
    reconstruction_error_percentile: list[float | None] | None = Field(
        serialization_alias="reconstructionErrorPercentile",
        description="the share (0 to 1) of the dataset's tokens with a lower reconstruction error; null until the "
                    "published run's anomaly distribution is computed")
    rarity_percentile: list[float | None] | None = Field(serialization_alias="rarityPercentile",
                                                        description="as reconstructionErrorPercentile, for rarity")
    max_reconstruction_error: float | None = Field(serialization_alias="maxReconstructionError")
    max_reconstruction_error_token_index: int | None = Field(serialization_alias="maxReconstructionErrorTokenIndex")
    max_reconstruction_error_percentile: float | None = Field(serialization_alias="maxReconstructionErrorPercentile")
    max_rarity: float | None = Field(serialization_alias="maxRarity")
    max_rarity_token_index: int | None = Field(serialization_alias="maxRarityTokenIndex")
    max_rarity_percentile: float | None = Field(serialization_alias="maxRarityPercentile")
    dataset_tokens: int | None = Field(serialization_alias="datasetTokens",
                                       description="the dataset tokens the percentiles are measured against")
    message: str | None = Field(description="why some scores or percentiles are null; null when none is")

    @classmethod
    def from_live(cls, anomaly: TextAnomaly) -> Self:
        error_peak, rarity_peak = _peak(anomaly.reconstruction_error), _peak(anomaly.rarity)
        return cls(
            reconstruction_error=anomaly.reconstruction_error,
            rarity=anomaly.rarity,
            reconstruction_error_percentile=anomaly.reconstruction_error_percentile,
            rarity_percentile=anomaly.rarity_percentile,
            max_reconstruction_error=_at(anomaly.reconstruction_error, error_peak),
            max_reconstruction_error_token_index=error_peak,
            max_reconstruction_error_percentile=_at(anomaly.reconstruction_error_percentile, error_peak),
            max_rarity=_at(anomaly.rarity, rarity_peak),
            max_rarity_token_index=rarity_peak,
            max_rarity_percentile=_at(anomaly.rarity_percentile, rarity_peak),
            dataset_tokens=anomaly.dataset_tokens,
            message=anomaly.message or None,
        )


class TextActivationAnomalyOut(TextActivationOut):
    """POST /api/activation/new's answer: Neuronpedia's fields, and each token's anomaly scores."""

    anomaly: AnomalyOut

    @classmethod
    def from_live_anomaly(cls, sae: Sae, live: LiveActivations) -> Self:
        plain = TextActivationOut.from_live(sae, live, live.features[0])
        anomaly = live.anomaly or TextAnomaly(
            reconstruction_error=[None] * len(live.tokens), rarity=None, reconstruction_error_percentile=None,
            rarity_percentile=None, dataset_tokens=None,
            message="The worker that answered computes no anomaly scores (an older version); restart the workers.")
        return cls(**plain.model_dump(), anomaly=AnomalyOut.from_live(anomaly))


class SearchAllOut(ResponseSchema):
    tokens: list[str] = Field(description="BOS first")
    result: list[TextActivationOut] = Field(description="the features, strongest first")


class TopkFeatureOut(ResponseSchema):
    """A published feature in brief, under FeatureOut's names, with its newest label (if any)."""

    model_id: str = Field(serialization_alias="modelId")
    layer: str = Field(description="the SAE id")
    index: int
    hook_name: str = Field(serialization_alias="hookName")
    max_act_approx: float = Field(serialization_alias="maxActApprox")
    frac_nonzero: float = Field(description="the share of tokens the feature is active on")
    explanations: list[ExplanationOut] = Field(description="the newest label, if the feature has one")

    @classmethod
    def from_brief(cls, brief: FeatureBrief) -> Self:
        return cls(
            model_id=brief.sae.language_model.slug,
            layer=brief.sae.slug,
            index=brief.feature.index,
            hook_name=brief.sae.hook_name,
            max_act_approx=brief.feature.max_act,
            frac_nonzero=brief.feature.frac_nonzero,
            explanations=[ExplanationOut.from_explanation(brief.explanation)] if brief.explanation else [],
        )


class TokenFeatureOut(ResponseSchema):
    activation_value: float = Field(serialization_alias="activationValue")
    feature_index: int = Field(serialization_alias="featureIndex")
    feature: TopkFeatureOut | None = Field(description="null where the SAE has no published dashboards")


class TokenTopFeaturesOut(ResponseSchema):
    position: int = Field(description="the token's place in the text's tokens, BOS at 0")
    token: str
    is_special: bool = Field(serialization_alias="isSpecial", description="one of the tokenizer's special tokens")
    top_features: list[TokenFeatureOut] = Field(serialization_alias="topFeatures",
                                                description="strongest first; only features that fire")

    @classmethod
    def from_live(cls, token: TokenFeatures, briefs: dict[int, FeatureBrief]) -> Self:
        return cls(
            position=token.position,
            token=token.token,
            is_special=token.is_special,
            top_features=[TokenFeatureOut(activation_value=value, feature_index=index,
                                          feature=TopkFeatureOut.from_brief(briefs[index]) if index in briefs else None)
                          for index, value in token.features],
        )


class TopkByTokenOut(ResponseSchema):
    source: str = Field(description="the SAE id")
    results: list[TokenTopFeaturesOut]
