"""Steering: generate from a prompt twice at once, as the model is (DEFAULT) and with directions added at hooks
(STEERED), one batch of two rows over the KV cache, with the same seeded sampling for both rows.

Neuronpedia's semantics: every position is steered, the prompt's included, and a direction d with coefficient c
acts at its hook h [..., d_in] as
- SIMPLE_ADDITIVE:    h + c d
- ORTHOGONAL_DECOMP:  (I - P) h + c P h, P the projection onto d (c = 1 leaves h as it is, c = 0 removes d)
- PROJECTION_CAP:     h with its component along d/|d| capped at c: h - max(h.d/|d| - c, 0) d/|d|
Only batch row 1 is steered, so row 0 is the plain model under exactly the same numerics. A chat whose DEFAULT
and STEERED conversations differ has two prompts of different lengths: those run as two batches of one, with the
same seeded noise, rather than padded into one.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from transformer_lens import HookedTransformer, TransformerLensKeyValueCache
from transformer_lens.hook_points import HookPoint

from workers.compute.language_model import hook_widths

DEFAULT_ROW, STEERED_ROW = 0, 1
# The log-probs and alternatives are read in float32 whatever the model's dtype, so bf16 ties stay rare.
LOGIT_DTYPE = torch.float32

HookFunction = Callable[[Tensor, HookPoint], Tensor]


class SteeringError(ValueError):
    """A steer that cannot run: a hook the model lacks, a direction of the wrong width or no length, too long."""


class SteerMethod(Enum):
    SIMPLE_ADDITIVE = "SIMPLE_ADDITIVE"
    ORTHOGONAL_DECOMP = "ORTHOGONAL_DECOMP"
    PROJECTION_CAP = "PROJECTION_CAP"


@dataclass(frozen=True)
class SteerDirection:
    """A direction at one hook: vector [d_in] in the hook's flattened width (hook_z: n_heads * d_head)."""

    hook_name: str
    vector: Tensor  # [d_in]
    coefficient: float


@dataclass(frozen=True)
class GenerationParams:
    """How to sample: temperature 0 is greedy; freq_penalty subtracts penalty x count from each token's logit,
    counting the tokens generated so far (not the prompt's), as OpenAI defines it."""

    n_tokens: int
    temperature: float = 1.0
    freq_penalty: float = 0.0
    seed: int = 0
    top_logprobs: int = 5
    stop_at_eos: bool = True


@dataclass(frozen=True)
class Completion:
    """The generated tokens of one row, EOS included when it ended it; log-probs under the model's own
    distribution (log_softmax of its logits, before temperature and penalty)."""

    token_ids: npt.NDArray[np.int64]  # [n]
    logprobs: npt.NDArray[np.float32]  # [n], of the token chosen
    top_ids: npt.NDArray[np.int64]  # [n, k], most likely first
    top_logprobs: npt.NDArray[np.float32]  # [n, k]


@dataclass(frozen=True)
class SteerResult:
    prompt_tokens: npt.NDArray[np.int64]  # [T], BOS first: STEERED's prompt
    default: Completion
    steered: Completion
    default_prompt_tokens: npt.NDArray[np.int64]  # [T'], the same as prompt_tokens unless DEFAULT had its own


class ForwardTokens:
    """The tokens [b, pos] of the forward pass in progress, which generate_rows sets before each pass, so that
    hooks can leave positions holding some tokens (a chat template's special tokens) unsteered."""

    def __init__(self, unsteered_ids: Sequence[int]) -> None:
        self.unsteered_ids = torch.tensor(sorted(set(unsteered_ids)), dtype=torch.int64)
        self.tokens: Tensor | None = None

    def steered_positions(self, rows: slice) -> Tensor:
        """[b', pos] True where the rows' tokens may be steered."""
        assert self.tokens is not None, "generate_rows sets the tokens before each forward pass"
        tokens = self.tokens[rows]
        return ~torch.isin(tokens, self.unsteered_ids.to(tokens.device))


def steering_direction(vector: Tensor, coefficient: float, hook_name: str, normalize: bool) -> SteerDirection:
    """A direction from a decoder row or custom vector [d_in], finite and non-zero; normalize divides it by its
    norm first."""
    vector = vector.detach().flatten()
    if not bool(torch.isfinite(vector).all()):
        raise SteeringError(f"The direction at {hook_name} has NaN or infinite values; give a finite vector.")
    norm = float(vector.float().norm())
    # A zero direction has no projection to decompose or cap, nor a norm to divide by.
    if norm == 0:
        raise SteeringError(f"The direction at {hook_name} is zero, so it points nowhere; give a non-zero vector.")
    if normalize:
        vector = vector / norm
    return SteerDirection(hook_name=hook_name, vector=vector, coefficient=coefficient)


def steer_additive(h: Tensor, d: Tensor, c: float) -> Tensor:
    """h [..., d_in] + c d [d_in]."""
    return h + c * d.to(h.dtype)


def steer_orthogonal(h: Tensor, d: Tensor, c: float) -> Tensor:
    """(I - P) h + c P h = h + (c - 1) P h, with P h = (h.d / d.d) d; h [..., d_in], d [d_in]."""
    d32 = d.to(LOGIT_DTYPE)
    along = (h.to(LOGIT_DTYPE) @ d32 / (d32 @ d32)).unsqueeze(-1) * d32  # [..., d_in]
    return (h.to(LOGIT_DTYPE) + (c - 1) * along).to(h.dtype)


def steer_projection_cap(h: Tensor, d: Tensor, c: float) -> Tensor:
    """h [..., d_in] with its component along the unit d [d_in] capped at c; below the cap it is unchanged."""
    unit = d.to(LOGIT_DTYPE) / d.to(LOGIT_DTYPE).norm()
    projection = h.to(LOGIT_DTYPE) @ unit  # [...]
    excess = (projection - c).clamp(min=0).unsqueeze(-1)  # [..., 1]
    capped: Tensor = h.to(LOGIT_DTYPE) - excess * unit
    return capped.to(h.dtype)


STEER_FUNCTIONS: dict[SteerMethod, Callable[[Tensor, Tensor, float], Tensor]] = {
    SteerMethod.SIMPLE_ADDITIVE: steer_additive,
    SteerMethod.ORTHOGONAL_DECOMP: steer_orthogonal,
    SteerMethod.PROJECTION_CAP: steer_projection_cap,
}


def steering_hooks(
    directions: Sequence[SteerDirection],
    method: SteerMethod,
    rows: slice = slice(STEERED_ROW, None),
    forward_tokens: ForwardTokens | None = None,
) -> list[tuple[str, HookFunction]]:
    """One forward hook per hook name, applying its directions in order to the batch rows given, at every position
    (with forward_tokens, every position but those holding its unsteered tokens)."""
    by_hook: dict[str, list[SteerDirection]] = {}
    for direction in directions:
        by_hook.setdefault(direction.hook_name, []).append(direction)
    return [(name, _hook_function(group, STEER_FUNCTIONS[method], rows, forward_tokens))
            for name, group in by_hook.items()]


def _hook_function(
    directions: list[SteerDirection],
    steer: Callable[[Tensor, Tensor, float], Tensor],
    rows: slice,
    forward_tokens: ForwardTokens | None,
) -> HookFunction:
    def hook(activation: Tensor, hook: HookPoint) -> Tensor:
        # activation [b, pos, d_in], or [b, pos, n_heads, d_head] at hook_z, whose SAEs read the heads flattened
        width = directions[0].vector.shape[0]
        flat = activation.flatten(-2) if activation.shape[-1] != width else activation
        steered = flat[rows]
        for direction in directions:
            steered = steer(steered, direction.vector.to(flat.device), direction.coefficient)
        if forward_tokens is not None:
            steered = torch.where(forward_tokens.steered_positions(rows)[..., None], steered, flat[rows])
        out = flat.clone()
        out[rows] = steered
        return out.reshape(activation.shape)

    return hook


def adjusted_logits(logits: Tensor, counts: Tensor, freq_penalty: float) -> Tensor:
    """logits [b, V] less freq_penalty x counts [b, V], each token's count among the tokens generated so far."""
    return logits - freq_penalty * counts


def next_tokens(logits: Tensor, counts: Tensor, params: GenerationParams, generator: torch.Generator) -> Tensor:
    """[b] the next token of each row from logits [b, V]: argmax at temperature 0, else a sample of
    softmax(adjusted / temperature) by the Gumbel-max trick, with one noise draw [V] shared by every row, so
    rows with equal logits choose the same token."""
    adjusted = adjusted_logits(logits, counts, params.freq_penalty)
    if params.temperature == 0:
        return adjusted.argmax(dim=-1)
    uniform = torch.rand(logits.shape[-1], generator=generator, dtype=LOGIT_DTYPE).clamp(min=1e-20, max=1 - 1e-7)
    gumbel = -torch.log(-torch.log(uniform)).to(logits.device)
    return (adjusted / params.temperature + gumbel).argmax(dim=-1)


def steer_generate(
    model: HookedTransformer,
    prompt_tokens: Tensor,
    directions: Sequence[SteerDirection],
    method: SteerMethod,
    params: GenerationParams,
    unsteered_ids: Sequence[int] = (),
) -> SteerResult:
    """DEFAULT and STEERED from prompt_tokens [1, T] (BOS first), generated together as one batch of two; positions
    holding one of unsteered_ids are left as they are."""
    _check(model, prompt_tokens, directions, params)
    forward_tokens = ForwardTokens(unsteered_ids) if unsteered_ids else None
    hooks = steering_hooks(directions, method, forward_tokens=forward_tokens)
    rows = generate_rows(model, prompt_tokens.repeat(2, 1), hooks, params, forward_tokens=forward_tokens)
    prompt = prompt_tokens[0].cpu().numpy()
    return SteerResult(prompt_tokens=prompt, default=rows[DEFAULT_ROW], steered=rows[STEERED_ROW],
                       default_prompt_tokens=prompt)


def steer_generate_apart(
    model: HookedTransformer,
    default_tokens: Tensor,
    steered_tokens: Tensor,
    directions: Sequence[SteerDirection],
    method: SteerMethod,
    params: GenerationParams,
    unsteered_ids: Sequence[int] = (),
) -> SteerResult:
    """DEFAULT from default_tokens [1, T] and STEERED from steered_tokens [1, T'], two prompts (a chat whose two
    sides differ), as two batches of one under the same seeded noise."""
    if torch.equal(default_tokens, steered_tokens):
        return steer_generate(model, steered_tokens, directions, method, params, unsteered_ids)
    _check(model, default_tokens, [], params)
    _check(model, steered_tokens, directions, params)
    forward_tokens = ForwardTokens(unsteered_ids) if unsteered_ids else None
    hooks = steering_hooks(directions, method, rows=slice(None), forward_tokens=forward_tokens)
    default = generate_rows(model, default_tokens, [], params)[0]
    steered = generate_rows(model, steered_tokens, hooks, params, forward_tokens=forward_tokens)[0]
    return SteerResult(prompt_tokens=steered_tokens[0].cpu().numpy(), default=default, steered=steered,
                       default_prompt_tokens=default_tokens[0].cpu().numpy())


def plain_generate(model: HookedTransformer, prompt_tokens: Tensor, params: GenerationParams) -> Completion:
    """One unsteered completion of prompt_tokens [1, T] by the same loop: what a steer is measured against."""
    _check(model, prompt_tokens, [], params)
    return generate_rows(model, prompt_tokens, [], params)[0]


def _check(
    model: HookedTransformer, prompt_tokens: Tensor, directions: Sequence[SteerDirection], params: GenerationParams
) -> None:
    if prompt_tokens.ndim != 2 or prompt_tokens.shape[0] != 1 or prompt_tokens.shape[1] == 0:
        raise SteeringError("The prompt must be one non-empty row of tokens [1, T]; type a prompt.")
    if prompt_tokens.shape[1] + params.n_tokens > model.cfg.n_ctx:
        raise SteeringError(
            f"The prompt's {prompt_tokens.shape[1]} tokens and {params.n_tokens} new ones exceed the model's "
            f"context of {model.cfg.n_ctx}; shorten the prompt or ask for fewer tokens."
        )
    widths = hook_widths(model.cfg)
    for direction in directions:
        if direction.hook_name not in widths:
            raise SteeringError(f"The model has no hook {direction.hook_name!r} to steer at; pick one it has.")
        if direction.vector.shape != (widths[direction.hook_name],):
            raise SteeringError(
                f"A direction at {direction.hook_name} has shape {tuple(direction.vector.shape)}, but the hook is "
                f"{widths[direction.hook_name]} wide; give a vector of that width."
            )


def generate_rows(
    model: HookedTransformer,
    tokens: Tensor,
    hooks: list[tuple[str, HookFunction]],
    params: GenerationParams,
    use_cache: bool = True,
    forward_tokens: ForwardTokens | None = None,
) -> list[Completion]:
    """Continue each row of tokens [b, T] under the hooks; with use_cache, the prompt runs once and each new token
    alone over the KV cache, otherwise the whole sequence runs again each step (the reference the cache must match).
    Rows stop at EOS (all together once every row has) or after params.n_tokens."""
    device = next(model.parameters()).device
    sequence = tokens.to(device)
    batch = sequence.shape[0]
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, batch) if use_cache else None
    generator = torch.Generator().manual_seed(params.seed)
    eos = model.tokenizer.eos_token_id if model.tokenizer is not None and params.stop_at_eos else None
    counts = torch.zeros((batch, model.cfg.d_vocab), dtype=LOGIT_DTYPE, device=device)
    step_input = sequence
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    steps: list[_Step] = []
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        for _ in range(params.n_tokens):
            model_input = step_input if use_cache else sequence
            if forward_tokens is not None:
                forward_tokens.tokens = model_input
            logits = model(model_input, attention_mask=torch.ones_like(model_input), past_kv_cache=cache)
            last = logits[:, -1].to(LOGIT_DTYPE)  # [b, V]
            chosen = next_tokens(last, counts, params, generator)  # [b]
            counts[torch.arange(batch, device=device), chosen] += 1
            steps.append(_step(last, chosen, params.top_logprobs))
            step_input = chosen[:, None]
            sequence = torch.cat([sequence, step_input], dim=1)
            if eos is not None:
                finished |= chosen == eos
                if bool(finished.all()):
                    break
    return [_row_completion(steps, row, eos) for row in range(batch)]


@dataclass(frozen=True)
class _Step:
    """What one generation step keeps of each row, on the device until the end: no [b, V] kept."""

    chosen: Tensor  # [b]
    logprob: Tensor  # [b]
    top_ids: Tensor  # [b, k]
    top_logprobs: Tensor  # [b, k]


def _step(logits: Tensor, chosen: Tensor, k: int) -> _Step:
    logprobs = logits.log_softmax(dim=-1)  # [b, V]
    top = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
    return _Step(chosen, logprobs.gather(-1, chosen[:, None])[:, 0], top.indices, top.values)


def _row_completion(steps: list[_Step], row: int, eos: int | None) -> Completion:
    chosen = torch.stack([step.chosen[row] for step in steps])  # [n]
    length = len(steps)
    if eos is not None and bool((chosen == eos).any()):
        length = int((chosen == eos).nonzero()[0, 0]) + 1
    kept = steps[:length]
    return Completion(
        token_ids=chosen[:length].cpu().numpy().astype(np.int64),
        logprobs=torch.stack([step.logprob[row] for step in kept]).cpu().numpy().astype(np.float32),
        top_ids=torch.stack([step.top_ids[row] for step in kept]).cpu().numpy().astype(np.int64),
        top_logprobs=torch.stack([step.top_logprobs[row] for step in kept]).cpu().numpy().astype(np.float32),
    )
