"""What a steer request sends the worker and what comes back: plain TypedDicts, no torch, so the web imports them."""

from typing import Literal, TypedDict

STEER_METHODS = ("SIMPLE_ADDITIVE", "ORTHOGONAL_DECOMP", "PROJECTION_CAP")
SteerMethodName = Literal["SIMPLE_ADDITIVE", "ORTHOGONAL_DECOMP", "PROJECTION_CAP"]


class SteerFeature(TypedDict):
    """One SAE feature to steer with: its decoder row W_dec[index], at its SAE's hook, times strength."""

    sae_id: int
    index: int
    strength: float


class SteerVector(TypedDict):
    """A custom direction (a probe, a steering vector from elsewhere) at a hook, in that hook's flattened width."""

    hook_name: str
    vector: list[float]
    strength: float


class ChatMessage(TypedDict):
    role: str  # user, assistant, system, model or developer: the chat template decides what each means
    content: str


class SteerChat(TypedDict):
    """A chat steer: each side's conversation under the model's chat template (with the assistant's turn opened),
    and whether the template's special tokens are steered too."""

    default_messages: list[ChatMessage]
    steered_messages: list[ChatMessage]
    steer_special_tokens: bool


class SteerRequest(TypedDict):
    """Everything the worker needs; the web has checked ranges, the worker checks what needs the model.

    The coefficient of each direction is strength x strength_multiplier; normalize_steering divides each
    direction by its norm first. temperature 0 is greedy.
    """

    language_model_id: int
    prompt: str  # a completion's prompt; empty for a chat
    chat: SteerChat | None
    features: list[SteerFeature]
    vectors: list[SteerVector]
    steer_method: SteerMethodName
    strength_multiplier: float
    normalize_steering: bool
    n_tokens: int
    temperature: float
    freq_penalty: float
    seed: int
    top_logprobs: int


class SteerAlternative(TypedDict):
    token: str
    tokenId: int
    logprob: float


class SteerToken(TypedDict):
    """One generated token: its log-prob under the model's own distribution and the top alternatives."""

    token: str
    tokenId: int
    logprob: float
    topLogprobs: list[SteerAlternative]


class SteerCompletion(TypedDict):
    prompt: str  # the prompt as the model read it (a chat: rendered by its template, special tokens included)
    text: str  # the prompt, then the completion, decoded together
    completion: str  # the generated text alone, without the EOS that ended it
    tokens: list[SteerToken]  # the generated tokens only, EOS included when it ended the completion


class SteerResponse(TypedDict):
    promptTokenIds: list[int]  # STEERED's prompt, BOS first
    defaultPromptTokenIds: list[int]  # DEFAULT's: the same but for a chat whose two conversations differ
    default: SteerCompletion
    steered: SteerCompletion


class SteerRefusal(TypedDict):
    """A request the worker cannot run (an unknown SAE or feature, a prompt too long, ...): the web answers 400."""

    error: str
