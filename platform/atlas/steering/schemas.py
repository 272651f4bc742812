"""The JSON shapes of POST /api/steer and /api/steer-chat, under Neuronpedia's names and limits (its
apps/webapp/lib/utils/steer.ts), and of what they answer."""

from typing import Annotated, Any, Self

from pydantic import AfterValidator, AliasChoices, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from atlas.jsonapi import (
    NO_NUL_PATTERN,
    FeatureIndex,
    Identifier,
    JsonInteger,
    JsonNumber,
    RequestSchema,
    ResponseSchema,
    null_means,
)
from atlas.steering.models import SteerOutput
from atlas.vectors.models import STRENGTH_LIMIT
from workers.compute.steer_types import STEER_METHODS, SteerCompletion, SteerToken

PROMPT_MAX_CHARACTERS = 2048
N_TOKENS_MAX = 256
TEMPERATURE_MAX = 2.0
STRENGTH_MULTIPLIER_MAX = 10.0
FREQ_PENALTY_LIMIT = 2.0
SEED_LIMIT = 100_000_000
FEATURES_MAX = 32
MESSAGES_MAX = 64
CHAT_ROLES = ("user", "assistant", "system", "model", "developer")
# Neuronpedia's defaults where a field is left out (it requires most; its clients send them all).
DEFAULT_TEMPERATURE = 0.5
DEFAULT_N_TOKENS = 32
DEFAULT_FREQ_PENALTY = 1.0
DEFAULT_SEED = 16
DEFAULT_STRENGTH_MULTIPLIER = 1.0
DEFAULT_METHOD = "SIMPLE_ADDITIVE"
CHAT_FIELDS = ("defaultChatMessages", "steeredChatMessages", "steer_special_tokens")
COMPLETION_FIELDS = ("prompt",)



def _steer_method(value: str) -> str:
    if value not in STEER_METHODS:
        raise PydanticCustomError("steer_method", "must be one of {names}", {"names": ", ".join(STEER_METHODS)})
    return value


def _content(text: str) -> str:
    if len(text) > PROMPT_MAX_CHARACTERS:
        raise PydanticCustomError("content_too_long", "has {length} characters; send at most {limit}",
                                  {"length": len(text), "limit": PROMPT_MAX_CHARACTERS})
    return text


def _prompt(text: str) -> str:
    if not text.strip():
        raise PydanticCustomError("prompt_empty", "is empty; type a prompt")
    return _content(text)


SteerMethodName = Annotated[str, null_means(DEFAULT_METHOD), AfterValidator(_steer_method),
                            Field(json_schema_extra={"enum": list(STEER_METHODS)})]
Prompt = Annotated[str, AfterValidator(_prompt),
                   Field(json_schema_extra={"minLength": 1, "maxLength": PROMPT_MAX_CHARACTERS,
                                            "pattern": r"^[^\u0000]*[^\s\u0000][^\u0000]*$"})]


class SteerFeatureIn(RequestSchema):
    """One direction: an SAE's feature (its decoder row) or a vector (`layer` is then its source)."""

    model_id: Identifier = Field(validation_alias="modelId")
    layer: Identifier = Field(validation_alias=AliasChoices("layer", "source"),
                              description="the SAE id, or a vector's source (0-vectors-resid-post)")
    index: FeatureIndex
    strength: JsonNumber = Field(ge=-STRENGTH_LIMIT, le=STRENGTH_LIMIT)


class SteerSettingsIn(RequestSchema):
    """What a completion and a chat steer share."""

    model_id: Identifier = Field(validation_alias="modelId")
    features: list[SteerFeatureIn] = Field(min_length=1, max_length=FEATURES_MAX)
    temperature: Annotated[JsonNumber, null_means(DEFAULT_TEMPERATURE)] = Field(
        DEFAULT_TEMPERATURE, ge=0, le=TEMPERATURE_MAX, description="0 is greedy")
    n_tokens: Annotated[JsonInteger, null_means(DEFAULT_N_TOKENS)] = Field(DEFAULT_N_TOKENS, ge=1,
                                                                             le=N_TOKENS_MAX)
    freq_penalty: Annotated[JsonNumber, null_means(DEFAULT_FREQ_PENALTY)] = Field(
        DEFAULT_FREQ_PENALTY, ge=-FREQ_PENALTY_LIMIT, le=FREQ_PENALTY_LIMIT,
        description="subtracted from each token's logit once per time it was generated (OpenAI's definition)")
    seed: Annotated[JsonInteger, null_means(DEFAULT_SEED)] = Field(DEFAULT_SEED, ge=-SEED_LIMIT, le=SEED_LIMIT)
    strength_multiplier: Annotated[JsonNumber, null_means(DEFAULT_STRENGTH_MULTIPLIER)] = Field(
        DEFAULT_STRENGTH_MULTIPLIER, ge=0, le=STRENGTH_MULTIPLIER_MAX)
    steer_method: SteerMethodName = DEFAULT_METHOD
    normalize_steering: Annotated[StrictBool, null_means(False)] = Field(
        False, description="divide each direction by its norm before scaling it")

    @classmethod
    def _refuse_fields(cls, body: object, fields: tuple[str, ...], use: str) -> None:
        if isinstance(body, dict) and (mixed := [name for name in fields if name in body]):
            named = ", ".join(f"'{name}'" for name in mixed)
            raise PydanticCustomError("steer_mixed", "{named} belong to {use}; send a prompt to /api/steer or "
                                                     "chat messages to /api/steer-chat, not both",
                                      {"named": named, "use": use})


class SteerCompletionIn(SteerSettingsIn):
    prompt: Prompt

    @model_validator(mode="before")
    @classmethod
    def _no_chat_fields(cls, body: Any) -> Any:
        cls._refuse_fields(body, CHAT_FIELDS, "/api/steer-chat")
        return body


def _role(value: str) -> str:
    if value not in CHAT_ROLES:
        raise PydanticCustomError("chat_role", "must be one of {names}", {"names": ", ".join(CHAT_ROLES)})
    return value


class ChatMessageIn(RequestSchema):
    role: Annotated[str, AfterValidator(_role), Field(json_schema_extra={"enum": list(CHAT_ROLES)})]
    content: Annotated[str, AfterValidator(_content),
                       Field(json_schema_extra={"maxLength": PROMPT_MAX_CHARACTERS, "pattern": NO_NUL_PATTERN})]


def _conversation(messages: list[ChatMessageIn]) -> list[ChatMessageIn]:
    length = sum(len(message.content) for message in messages)
    if length > PROMPT_MAX_CHARACTERS:
        raise PydanticCustomError("chat_too_long", "holds {length} characters in all; send at most {limit} (start a "
                                                   "new conversation)", {"length": length,
                                                                          "limit": PROMPT_MAX_CHARACTERS})
    return messages


Conversation = Annotated[list[ChatMessageIn], AfterValidator(_conversation),
                         Field(min_length=1, max_length=MESSAGES_MAX)]


class SteerChatIn(SteerSettingsIn):
    default_messages: Conversation = Field(validation_alias="defaultChatMessages")
    steered_messages: Conversation = Field(validation_alias="steeredChatMessages")
    steer_special_tokens: Annotated[StrictBool, null_means(True)] = Field(
        True, description="steer the chat template's special tokens too (false leaves their positions as they are)")

    @model_validator(mode="before")
    @classmethod
    def _no_completion_fields(cls, body: Any) -> Any:
        cls._refuse_fields(body, COMPLETION_FIELDS, "/api/steer")
        return body


class AlternativeOut(ResponseSchema):
    token: str
    token_id: int = Field(serialization_alias="tokenId")
    logprob: float


class LogprobOut(ResponseSchema):
    """One generated token: its log-prob under the model's own distribution and the most likely tokens there."""

    token: str
    token_id: int = Field(serialization_alias="tokenId")
    logprob: float
    top_logprobs: list[AlternativeOut] = Field(serialization_alias="topLogprobs")

    @classmethod
    def from_token(cls, token: SteerToken) -> Self:
        return cls(token=token["token"], token_id=token["tokenId"], logprob=token["logprob"],
                   top_logprobs=[AlternativeOut(token=alternative["token"], token_id=alternative["tokenId"],
                                                logprob=alternative["logprob"])
                                 for alternative in token["topLogprobs"]])


def _logprobs(completion: SteerCompletion) -> list[LogprobOut]:
    return [LogprobOut.from_token(token) for token in completion["tokens"]]


class SteerFeatureOut(ResponseSchema):
    model_id: str = Field(serialization_alias="modelId")
    layer: str
    index: int
    strength: float


class SteerSettingsOut(ResponseSchema):
    """The settings the result was generated with, as the request named them."""

    temperature: float
    n_tokens: int
    freq_penalty: float
    seed: int
    strength_multiplier: float
    steer_method: str
    normalize_steering: bool
    steer_special_tokens: bool | None = Field(None, description="chat only")


class _StoredOut(ResponseSchema):
    id: str
    share_url: str = Field(serialization_alias="shareUrl", description="the result's page, /steer/<id>")
    model_id: str = Field(serialization_alias="modelId")
    features: list[SteerFeatureOut]
    settings: SteerSettingsOut


def _stored_fields(output: SteerOutput, share_url: str) -> dict[str, Any]:
    asked = output.settings
    return {"id": output.id, "share_url": share_url, "model_id": output.language_model.slug,
            "features": [SteerFeatureOut(**feature) for feature in asked["features"]],
            "settings": SteerSettingsOut(**asked["settings"])}


class SteerCompletionOut(_StoredOut):
    """Neuronpedia's answer: both texts are the prompt then the completion; DEFAULT is the same sampling, same
    seed, unsteered."""

    steered: str = Field(serialization_alias="STEERED")
    default: str = Field(serialization_alias="DEFAULT")
    steered_logprobs: list[LogprobOut] = Field(serialization_alias="steeredLogProbs")
    default_logprobs: list[LogprobOut] = Field(serialization_alias="defaultLogProbs")
    prompt: str

    @classmethod
    def from_output(cls, output: SteerOutput, share_url: str) -> Self:
        answer = output.answer
        return cls(steered=answer["steered"]["text"], default=answer["default"]["text"],
                   steered_logprobs=_logprobs(answer["steered"]), default_logprobs=_logprobs(answer["default"]),
                   prompt=output.settings["prompt"], **_stored_fields(output, share_url))


class ChatMessageOut(ResponseSchema):
    role: str
    content: str


class ChatInputOut(ResponseSchema):
    raw: str = Field(description="the conversation rendered by the model's chat template, special tokens included")
    chat_template: list[ChatMessageOut]


class ChatSideOut(ChatInputOut):
    """One side's conversation with the model's reply appended (chat_template), and as text (raw: the rendered
    prompt, then the reply)."""

    logprobs: list[LogprobOut]

    @classmethod
    def from_side(cls, messages: list[dict[str, str]], completion: SteerCompletion) -> Self:
        reply = ChatMessageOut(role="assistant", content=completion["completion"])
        return cls(raw=completion["text"], chat_template=[ChatMessageOut(**message) for message in messages] + [reply],
                   logprobs=_logprobs(completion))


class SteerChatOut(_StoredOut):
    steered: ChatSideOut = Field(serialization_alias="STEERED")
    default: ChatSideOut = Field(serialization_alias="DEFAULT")
    input: ChatInputOut = Field(description="STEERED's conversation as the model read it")

    @classmethod
    def from_output(cls, output: SteerOutput, share_url: str) -> Self:
        answer, asked = output.answer, output.settings
        steered_messages = asked["steeredChatMessages"]
        return cls(steered=ChatSideOut.from_side(steered_messages, answer["steered"]),
                   default=ChatSideOut.from_side(asked["defaultChatMessages"], answer["default"]),
                   input=ChatInputOut(raw=answer["steered"]["prompt"],
                                      chat_template=[ChatMessageOut(**message) for message in steered_messages]),
                   **_stored_fields(output, share_url))


def steer_answer(output: SteerOutput, share_url: str) -> SteerCompletionOut | SteerChatOut:
    """A stored result as the endpoint that made it answers."""
    if output.kind == SteerOutput.Kind.CHAT:
        return SteerChatOut.from_output(output, share_url)
    return SteerCompletionOut.from_output(output, share_url)
