"""A steer request on the worker (the live task): DEFAULT and STEERED completions of a prompt or chat, with SAE
features' decoder rows and custom vectors as the directions."""

import torch
from torch import Tensor
from transformer_lens import HookedTransformer
from transformers import PreTrainedTokenizerBase

from atlas.lms.models import LanguageModel
from atlas.saes.models import Sae
from workers.compute.live import LiveTextError, text_tokens
from workers.compute.sae import SparseAutoencoder
from workers.compute.steer_types import (
    ChatMessage,
    SteerCompletion,
    SteerFeature,
    SteerRefusal,
    SteerRequest,
    SteerResponse,
    SteerToken,
    SteerVector,
)
from workers.compute.steering import (
    Completion,
    GenerationParams,
    SteerDirection,
    SteeringError,
    SteerMethod,
    SteerResult,
    steer_generate,
    steer_generate_apart,
    steering_direction,
)
from workers.loaded import language_model_loaded, sae_loaded, worker_device


def steer_compute(request: SteerRequest) -> SteerResponse | SteerRefusal:
    """Both completions with their tokens' log-probs, or {"error": message} for a request that cannot run."""
    language_model = LanguageModel.objects.filter(pk=request["language_model_id"]).first()
    if language_model is None:
        return {"error": f"Language model {request['language_model_id']} no longer exists; pick another model."}
    saes = Sae.objects.in_bulk({feature["sae_id"] for feature in request["features"]})
    refusal = _saes_refusal(request["features"], saes, language_model)
    if refusal is not None:
        return {"error": refusal}
    device = worker_device()
    model = language_model_loaded(language_model, device)
    try:
        directions = _feature_directions(request, saes, device) + _vector_directions(request)
        result = _generated(model, request, directions)
    except (LiveTextError, SteeringError) as error:
        return {"error": str(error)}
    assert model.tokenizer is not None  # text_tokens and chat_tokens refused a model without one
    skip_bos = request["chat"] is None
    return {
        "promptTokenIds": result.prompt_tokens.tolist(),
        "defaultPromptTokenIds": result.default_prompt_tokens.tolist(),
        "default": _completion_payload(model.tokenizer, result.default_prompt_tokens.tolist(), result.default,
                                       skip_bos),
        "steered": _completion_payload(model.tokenizer, result.prompt_tokens.tolist(), result.steered, skip_bos),
    }


def _generated(model: HookedTransformer, request: SteerRequest, directions: list[SteerDirection]) -> SteerResult:
    params = GenerationParams(n_tokens=request["n_tokens"], temperature=request["temperature"],
                              freq_penalty=request["freq_penalty"], seed=request["seed"],
                              top_logprobs=request["top_logprobs"])
    method = SteerMethod(request["steer_method"])
    chat = request["chat"]
    if chat is None:
        return steer_generate(model, text_tokens(model, request["prompt"]), directions, method, params)
    assert model.tokenizer is not None  # chat_tokens refuses a model without one
    unsteered = [] if chat["steer_special_tokens"] else model.tokenizer.all_special_ids
    return steer_generate_apart(model, chat_tokens(model, chat["default_messages"]),
                                chat_tokens(model, chat["steered_messages"]), directions, method, params, unsteered)


def chat_tokens(model: HookedTransformer, messages: list[ChatMessage]) -> Tensor:
    """[1, T]: the conversation rendered by the model's chat template with the assistant's turn opened, tokenized
    as written (the template places its own BOS)."""
    tokenizer = model.tokenizer
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        raise LiveTextError("The model has no chat template; steer it with POST /api/steer and a prompt instead.")
    rendered = tokenizer.apply_chat_template([dict(message) for message in messages], tokenize=False,
                                             add_generation_prompt=True)
    assert isinstance(rendered, str)  # tokenize=False renders one conversation to one string
    ids: list[int] = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return torch.tensor([ids[: model.cfg.n_ctx]], dtype=torch.int64)


def _saes_refusal(features: list[SteerFeature], saes: dict[int, Sae], language_model: LanguageModel) -> str | None:
    for feature in features:
        sae = saes.get(feature["sae_id"])
        if sae is None:
            return f"SAE {feature['sae_id']} no longer exists; pick features of another SAE."
        if sae.language_model_id != language_model.pk:
            return f"SAE {sae.slug} reads another model than {language_model.slug}; steer with that model's SAEs."
        if not 0 <= feature["index"] < sae.d_sae:
            return f"SAE {sae.slug} has features 0 to {sae.d_sae - 1}; there is no feature {feature['index']}."
    return None


def _feature_directions(request: SteerRequest, saes: dict[int, Sae], device: str) -> list[SteerDirection]:
    loaded: dict[int, SparseAutoencoder] = {}
    directions = []
    for feature in request["features"]:
        sae = saes[feature["sae_id"]]
        if sae.pk not in loaded:
            loaded[sae.pk] = sae_loaded(sae, device)
        row = loaded[sae.pk].W_dec[feature["index"]]  # [d_in]
        directions.append(steering_direction(row, feature["strength"] * request["strength_multiplier"],
                                             sae.hook_name, request["normalize_steering"]))
    return directions


def _vector_directions(request: SteerRequest) -> list[SteerDirection]:
    vectors: list[SteerVector] = request["vectors"]
    return [
        steering_direction(torch.tensor(vector["vector"], dtype=torch.float32),
                           vector["strength"] * request["strength_multiplier"], vector["hook_name"],
                           request["normalize_steering"])
        for vector in vectors
    ]


def _completion_payload(tokenizer: PreTrainedTokenizerBase, prompt_ids: list[int], completion: Completion,
                        skip_bos: bool) -> SteerCompletion:
    """skip_bos: a completion's prompt is shown without the BOS the model was given; a chat's keeps every token."""
    generated = completion.token_ids.tolist()
    shown = generated[:-1] if generated and generated[-1] == tokenizer.eos_token_id else generated
    body = prompt_ids[1:] if skip_bos and prompt_ids and prompt_ids[0] == tokenizer.bos_token_id else prompt_ids
    # The prompt and completion are decoded together, so a character split across the boundary comes out whole.
    text = _decoded(tokenizer, body + shown)
    prompt = _decoded(tokenizer, body)
    top_ids = completion.top_ids.tolist()
    strings = _token_strings(tokenizer, {*generated, *(token for row in top_ids for token in row)})
    tokens: list[SteerToken] = [
        {
            "token": strings[token],
            "tokenId": token,
            "logprob": float(logprob),
            "topLogprobs": [
                {"token": strings[alternative], "tokenId": alternative, "logprob": float(alternative_logprob)}
                for alternative, alternative_logprob in zip(alternatives, alternative_logprobs, strict=True)
            ],
        }
        for token, logprob, alternatives, alternative_logprobs in zip(
            generated, completion.logprobs.tolist(), top_ids, completion.top_logprobs.tolist(), strict=True
        )
    ]
    completion_text = text[len(prompt):] if text.startswith(prompt) else _decoded(tokenizer, shown)
    return {"prompt": prompt, "text": text, "completion": completion_text, "tokens": tokens}


def _decoded(tokenizer: PreTrainedTokenizerBase, token_ids: list[int]) -> str:
    text: str = tokenizer.decode(token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return text


def _token_strings(tokenizer: PreTrainedTokenizerBase, token_ids: set[int]) -> dict[int, str]:
    ordered = sorted(token_ids)
    decoded: list[str] = tokenizer.batch_decode([[token] for token in ordered], skip_special_tokens=False,
                                                clean_up_tokenization_spaces=False)
    return dict(zip(ordered, decoded, strict=True))
