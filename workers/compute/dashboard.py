"""Streaming computation of Neuronpedia-style dashboards for every feature of an SAE at once."""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from workers.compute.results import DashboardParams, Examples, FeatureDashboards
from workers.compute.sae import SparseAutoencoder

Progress = Callable[[str, int, int], None]  # (phase, done, total)

# Logits of one chunk of features ([chunk, d_vocab]) stay below this many elements, ~256 MB in fp32.
LOGIT_LENS_CHUNK_ELEMENTS = 1 << 26
_BLOCK_HOOK = re.compile(r"blocks\.(\d+)\.")
DEFAULT_PARAMS = DashboardParams()


@dataclass
class _Slots:
    """The best examples so far for every row (a feature, or a feature x interval); S slots per row."""

    score: Tensor  # [R, S] higher is better, -inf for an empty slot; unordered until _slots_sorted
    seq: Tensor  # [R, S] int64 sequence index in the dataset, -1 for an empty slot
    pos: Tensor  # [R, S] int64 position in the sequence
    value: Tensor  # [R, S] float32 activation at (seq, pos)
    window: Tensor  # [R, S, W] float32 the row's feature activation around pos, NaN outside the sequence


@dataclass
class _Candidates:
    """Examples from one batch offered to _Slots; C per row, empty ones have score -inf."""

    score: Tensor  # [R, C]
    batch_seq: Tensor  # [R, C] int64 sequence index within the batch
    pos: Tensor  # [R, C] int64
    value: Tensor  # [R, C] float32


@dataclass
class _Batch:
    """One batch of SAE activations and where it sits in the dataset."""

    acts: Tensor  # [b, T, F] every position, BOS included, for the windows
    first_seq: int  # dataset index of the batch's first sequence
    first_pos: int  # 1 when BOS is skipped: positions before it count nowhere

    @property
    def counted(self) -> Tensor:
        return self.acts[:, self.first_pos :]  # [b, T', F]


@dataclass
class _ForwardPass:
    """What pass 1 leaves for pass 2 and for the results."""

    hook_acts: list[Tensor]  # per batch [b, T, d_in] fp32 on CPU, re-encoded by pass 2
    top: _Slots  # rows are features, slots top_k
    max_act: Tensor  # [F] 0 for a feature that never fires
    in_residual_space: bool  # the hook gives [b, T, d_model], so W_dec @ W_U means something


@dataclass
class _LogitLens:
    top_ids: Tensor  # [F, n] int64
    top_values: Tensor  # [F, n]
    bottom_ids: Tensor  # [F, n] int64
    bottom_values: Tensor  # [F, n]
    hist_counts: Tensor  # [F, bins] int64
    hist_min: Tensor  # [F]
    hist_max: Tensor  # [F]


def dashboards_compute(
    model: HookedTransformer,
    sae: SparseAutoencoder,
    tokens: np.ndarray,
    hook_name: str,
    params: DashboardParams = DEFAULT_PARAMS,
    progress: Progress | None = None,
) -> FeatureDashboards:
    """Dashboards for all features of sae over tokens [N sequences, T], in two streaming passes.

    Pass 1 runs the model up to the hook once per token, encodes, and keeps top examples and maxima;
    pass 2 re-encodes the hook activations pass 1 kept on the CPU to count active tokens, sample
    interval examples and build histograms, which need the maxima. Memory for the results is
    O(d_sae x examples x window), whatever the number of tokens.
    The logit lens (W_dec @ W_U) needs features in the residual stream: for any other hook (hook_z,
    MLP neurons) the logit token arrays are empty [F, 0] and the logit histograms all zero.
    """
    report = progress or _progress_ignore
    token_tensor = _tokens_validate(tokens, model, params)
    stop_at_layer = _stop_at_layer(model, hook_name)
    device = next(model.parameters()).device
    if sae.device != device:
        raise ValueError(f"the SAE is on {sae.device} but the model is on {device}; load it on {device}")
    with torch.inference_mode():
        forward = _forward_pass(model, sae, token_tensor, hook_name, stop_at_layer, params, report)
        intervals, interval_counts, act_hist = _interval_pass(sae, forward.hook_acts, forward.max_act, params, report)
        if forward.in_residual_space:
            logit_lens = _logit_lens(model, sae, params, report)
        else:
            logit_lens = _logit_lens_empty(sae, params)
    n_tokens = token_tensor.shape[0] * (token_tensor.shape[1] - _first_pos(params))
    return FeatureDashboards(
        n_tokens=n_tokens,
        frac_nonzero=interval_counts.reshape(sae.d_sae, -1).sum(dim=1).cpu().numpy().astype(np.float64) / n_tokens,
        max_act=forward.max_act.cpu().numpy().astype(np.float32),
        top=_examples(_slots_sorted(forward.top), tokens, params, (params.top_k,)),
        intervals=_examples(
            _slots_sorted(intervals), tokens, params, (params.n_intervals, params.examples_per_interval)
        ),
        interval_counts=interval_counts.reshape(sae.d_sae, params.n_intervals).cpu().numpy().astype(np.int64),
        act_hist_counts=act_hist.reshape(sae.d_sae, params.act_hist_bins).cpu().numpy().astype(np.int64),
        logit_top_ids=logit_lens.top_ids.cpu().numpy().astype(np.int64),
        logit_top_values=logit_lens.top_values.cpu().numpy().astype(np.float32),
        logit_bottom_ids=logit_lens.bottom_ids.cpu().numpy().astype(np.int64),
        logit_bottom_values=logit_lens.bottom_values.cpu().numpy().astype(np.float32),
        logit_hist_counts=logit_lens.hist_counts.cpu().numpy().astype(np.int64),
        logit_hist_min=logit_lens.hist_min.cpu().numpy().astype(np.float32),
        logit_hist_max=logit_lens.hist_max.cpu().numpy().astype(np.float32),
    )


def _progress_ignore(phase: str, done: int, total: int) -> None:
    return None


def _first_pos(params: DashboardParams) -> int:
    return 1 if params.skip_bos else 0


def _tokens_validate(tokens: np.ndarray, model: HookedTransformer, params: DashboardParams) -> Tensor:
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"tokens must be an integer array [sequences, positions], got {tokens.dtype} {tokens.shape}")
    if tokens.shape[0] == 0 or tokens.shape[1] <= _first_pos(params):
        raise ValueError(f"tokens {tokens.shape} leave no positions to count")
    if tokens.min() < 0 or tokens.max() >= model.cfg.d_vocab:
        raise ValueError(f"token ids must lie in [0, {model.cfg.d_vocab}), the model's vocabulary")
    return torch.from_numpy(tokens.astype(np.int64))


def _stop_at_layer(model: HookedTransformer, hook_name: str) -> int | None:
    """The stop_at_layer that runs the model just far enough to reach the hook."""
    if hook_name not in model.hook_dict:
        raise ValueError(f"the model has no hook {hook_name!r}; hooks look like 'blocks.0.hook_resid_post'")
    block = _BLOCK_HOOK.match(hook_name)
    if block:
        return int(block.group(1)) + 1
    # hook_embed and hook_pos_embed come before every block; anything else (ln_final...) needs them all.
    return 0 if hook_name.startswith("hook_") else None


def _hook_activations(model: HookedTransformer, tokens: Tensor, hook_name: str, stop_at_layer: int | None) -> Tensor:
    """The hook's activation for tokens [b, T], as it comes ([b, T, d] or [b, T, n_heads, d_head])."""
    captured: list[Tensor] = []

    def capture(activation: Tensor, hook: HookPoint) -> None:
        captured.append(activation)

    # An explicit all-ones mask: these rows are unpadded, and TL would otherwise guess padding from pad ids.
    model.run_with_hooks(
        tokens,
        fwd_hooks=[(hook_name, capture)],
        stop_at_layer=stop_at_layer,
        return_type=None,
        attention_mask=torch.ones_like(tokens),
    )
    return captured[0]


def _forward_pass(
    model: HookedTransformer,
    sae: SparseAutoencoder,
    tokens: Tensor,
    hook_name: str,
    stop_at_layer: int | None,
    params: DashboardParams,
    report: Progress,
) -> _ForwardPass:
    """Pass 1: hook activations kept on CPU for pass 2, top examples and maxima.

    Nonzero counts are left to pass 2, which finds every active token anyway.
    """
    device = sae.device
    n_seqs, seq_len = tokens.shape
    top = _slots_empty(sae.d_sae, params.top_k, params.window, device)
    max_act = torch.zeros(sae.d_sae, device=device)  # [F]
    hook_acts: list[Tensor] = []  # [b, T, d_in] fp32 on CPU per batch
    in_residual_space = True
    for first_seq in range(0, n_seqs, params.batch_size):
        batch_tokens = tokens[first_seq : first_seq + params.batch_size].to(device)
        raw = _hook_activations(model, batch_tokens, hook_name, stop_at_layer)
        in_residual_space = raw.ndim == 3 and raw.shape[-1] == model.cfg.d_model
        hook_in = _flattened(raw, sae, hook_name)  # [b, T, d_in] fp32
        hook_acts.append(hook_in.cpu())
        batch = _Batch(sae.encode(hook_in), first_seq, _first_pos(params))
        maxima = _sequence_maxima(batch)
        max_act = torch.maximum(max_act, maxima.value.amax(dim=1))
        _slots_merge(top, maxima, batch, 1, params)
        report("forward", (first_seq + batch_tokens.shape[0]) * seq_len, n_seqs * seq_len)
    return _ForwardPass(hook_acts, top, max_act, in_residual_space)


def _flattened(raw: Tensor, sae: SparseAutoencoder, hook_name: str) -> Tensor:
    """[b, T, *rest] -> [b, T, d_in] fp32; hook_z's heads are concatenated as SAELens does."""
    flat = raw.reshape(raw.shape[0], raw.shape[1], -1).float()
    if flat.shape[-1] != sae.d_in:
        raise ValueError(
            f"hook {hook_name} gives {list(raw.shape[2:])} values per token, {flat.shape[-1]} in all, "
            f"but the SAE has d_in={sae.d_in}"
        )
    return flat


def _sequence_maxima(batch: _Batch) -> _Candidates:
    """Each sequence's strongest token for each feature: at most one top example per sequence."""
    value, position = batch.counted.max(dim=1)  # [b, F]
    value, position = value.T, position.T + batch.first_pos  # [F, b]
    batch_seq = torch.arange(value.shape[1], device=value.device).expand_as(value)
    score = value.masked_fill(value <= 0, -math.inf)
    return _Candidates(score=score, batch_seq=batch_seq, pos=position, value=value)


def _slots_empty(rows: int, slots: int, window: int, device: torch.device) -> _Slots:
    return _Slots(
        score=torch.full((rows, slots), -math.inf, device=device),
        seq=torch.full((rows, slots), -1, dtype=torch.int64, device=device),
        pos=torch.full((rows, slots), -1, dtype=torch.int64, device=device),
        value=torch.zeros((rows, slots), device=device),
        window=torch.full((rows, slots, window), math.nan, device=device),
    )


def _slots_merge(
    slots: _Slots, candidates: _Candidates, batch: _Batch, rows_per_feature: int, params: DashboardParams
) -> None:
    """Keep, in place, the S best of slots + candidates per row; newcomers' windows come from the batch.

    A newcomer takes the place of an example it evicts, so the slots are unordered until _slots_sorted,
    and the [R, S, W] windows are written only where something changed.
    Rows are feature-major: row = feature * rows_per_feature + (interval, for interval examples).
    """
    rows = _rows_that_change(slots, candidates)
    n_slots = slots.score.shape[1]
    score, best = torch.cat([slots.score[rows], candidates.score[rows]], dim=1).topk(n_slots, dim=1)  # [R', S]
    incoming = (best >= n_slots) & (score > -math.inf)  # [R', S] real newcomers
    in_row, in_slot = incoming.nonzero(as_tuple=True)  # sorted by row
    # The evicted slots come as many per row as the newcomers and in the same row order, so they pair up.
    _, out_slot = _evicted_slots(best, incoming).nonzero(as_tuple=True)
    row = in_row if isinstance(rows, slice) else rows[in_row]
    column = best[in_row, in_slot] - n_slots
    batch_seq, pos = candidates.batch_seq[row, column], candidates.pos[row, column]
    slots.score[row, out_slot] = score[in_row, in_slot]
    slots.seq[row, out_slot] = batch_seq + batch.first_seq
    slots.pos[row, out_slot] = pos
    slots.value[row, out_slot] = candidates.value[row, column]
    slots.window[row, out_slot] = _window_values(batch.acts, batch_seq, pos, row // rows_per_feature, params)


def _evicted_slots(best: Tensor, incoming: Tensor) -> Tensor:
    """[R', S] the old slots that the incoming newcomers replace, as many per row as there are newcomers.

    Old slots left out of best lost to better examples; any beyond the newcomers' count are empty already.
    """
    n_slots = best.shape[1]
    # Newcomers mark a spare column S, so that they never overwrite the mark of a kept old slot.
    kept = torch.zeros((best.shape[0], n_slots + 1), dtype=torch.bool, device=best.device)
    kept.scatter_(1, best.clamp(max=n_slots), True)
    free = ~kept[:, :n_slots]
    rank = free.cumsum(dim=1) - 1  # [R', S] order of each free slot within its row
    return free & (rank < incoming.sum(dim=1, keepdim=True))


def _rows_that_change(slots: _Slots, candidates: _Candidates) -> Tensor | slice:
    """Rows where a candidate beats the worst kept example: an index, or every row when most change.

    After a few batches few rows change, and touching only those saves most of the work; while most
    rows still change, whole tensors are cheaper than gathering and scattering nearly all rows.
    """
    changes = (candidates.score > slots.score.amin(dim=1, keepdim=True)).any(dim=1)  # [R]
    rows = changes.nonzero().squeeze(1)
    return slice(None) if 2 * rows.shape[0] > changes.shape[0] else rows


def _slots_sorted(slots: _Slots) -> _Slots:
    """The slots of every row ordered by score, best first, so empty slots come last."""
    order = slots.score.argsort(dim=1, descending=True)  # [R, S]
    window_order = order.unsqueeze(-1).expand_as(slots.window)
    return _Slots(
        score=slots.score.gather(1, order),
        seq=slots.seq.gather(1, order),
        pos=slots.pos.gather(1, order),
        value=slots.value.gather(1, order),
        window=slots.window.gather(1, window_order),
    )


def _window_values(acts: Tensor, batch_seq: Tensor, pos: Tensor, feature: Tensor, params: DashboardParams) -> Tensor:
    """acts [b, T, F] at E examples -> [E, W]: each feature's activation around its pos, NaN outside."""
    n_pos, n_features = acts.shape[1], acts.shape[2]
    offsets = torch.arange(-params.context_before, params.context_after + 1, device=acts.device)  # [W]
    positions = pos.unsqueeze(1) + offsets  # [E, W]
    inside = (positions >= 0) & (positions < n_pos)
    # Flat indices into the contiguous acts: one take is far cheaper than three-way advanced indexing.
    flat = (batch_seq.unsqueeze(1) * n_pos + positions.clamp(0, n_pos - 1)) * n_features + feature.unsqueeze(1)
    return acts.contiguous().reshape(-1)[flat].masked_fill(~inside, math.nan)


def _interval_pass(
    sae: SparseAutoencoder, hook_acts: list[Tensor], max_act: Tensor, params: DashboardParams, report: Progress
) -> tuple[_Slots, Tensor, Tensor]:
    """Pass 2: interval samples, interval counts [F * n] and act histogram [F * bins], from kept hook acts."""
    device = sae.device
    n_rows = sae.d_sae * params.n_intervals
    intervals = _slots_empty(n_rows, params.examples_per_interval, params.window, device)
    interval_counts = torch.zeros(n_rows, dtype=torch.int64, device=device)
    act_hist = torch.zeros(sae.d_sae * params.act_hist_bins, dtype=torch.int64, device=device)
    generator = torch.Generator(device=device).manual_seed(params.seed)
    safe_max = torch.where(max_act > 0, max_act, 1.0)  # features that never fire have no active tokens
    total = sum(acts.shape[0] * acts.shape[1] for acts in hook_acts)
    done, first_seq = 0, 0
    for hook_in in hook_acts:
        batch = _Batch(sae.encode(hook_in.to(device)), first_seq, _first_pos(params))
        seq, pos, feature, value = _active_tokens(batch)
        fraction = value / safe_max[feature]  # in (0, 1]
        act_hist += torch.bincount(
            feature * params.act_hist_bins + _bin_index(fraction, params.act_hist_bins), minlength=act_hist.shape[0]
        )
        row = feature * params.n_intervals + _bin_index(fraction, params.n_intervals)
        interval_counts += torch.bincount(row, minlength=n_rows)
        keys = torch.rand(row.shape[0], generator=generator, device=device)
        # A token whose key is above its row's largest kept key can never be sampled; drop it before sorting.
        fresh = (keys < -intervals.score.amin(dim=1)[row]).nonzero().squeeze(1)
        candidates = _reservoir_candidates(
            row[fresh], keys[fresh], seq[fresh], pos[fresh], value[fresh], n_rows, params
        )
        _slots_merge(intervals, candidates, batch, params.n_intervals, params)
        first_seq += hook_in.shape[0]
        done += hook_in.shape[0] * hook_in.shape[1]
        report("intervals", done, total)
    return intervals, interval_counts, act_hist


def _active_tokens(batch: _Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(batch seq, pos, feature, value) [E] of every counted token where a feature is active."""
    n_pos, n_features = batch.acts.shape[1], batch.acts.shape[2]
    active = batch.acts > 0  # [b, T, F]
    active[:, : batch.first_pos] = False
    # One flat nonzero and one take are much cheaper than their three-dimensional versions.
    flat = active.reshape(-1).nonzero().squeeze(1)
    token = flat // n_features
    seq = token // n_pos
    return seq, token - seq * n_pos, flat - token * n_features, batch.acts.reshape(-1)[flat]


def _bin_index(fraction: Tensor, n_bins: int) -> Tensor:
    """Which of n_bins equal bins over (0, 1] holds fraction (value / max); bins are closed on the right."""
    return (torch.ceil(fraction * n_bins) - 1).clamp(0, n_bins - 1).long()


def _reservoir_candidates(
    row: Tensor, keys: Tensor, seq: Tensor, pos: Tensor, value: Tensor, n_rows: int, params: DashboardParams
) -> _Candidates:
    """For each row the per_row active tokens with the smallest random keys: a uniform sample.

    Keeping the smallest keys across batches (bottom-k sampling) keeps every active token equally
    likely, whatever the batch boundaries, without knowing the counts in advance.
    """
    # Keys lie in [0, 1), so row + key sorts by row, then by key within the row; float64 keeps both exact.
    order = (row.double() + keys.double()).argsort()
    sorted_rows = row[order]
    rank = torch.arange(order.shape[0], device=row.device) - torch.searchsorted(sorted_rows, sorted_rows)
    per_row = params.examples_per_interval
    keep = rank < per_row
    chosen, chosen_row, chosen_rank = order[keep], sorted_rows[keep], rank[keep]
    candidates = _Candidates(
        score=torch.full((n_rows, per_row), -math.inf, device=row.device),
        batch_seq=torch.zeros((n_rows, per_row), dtype=torch.int64, device=row.device),
        pos=torch.zeros((n_rows, per_row), dtype=torch.int64, device=row.device),
        value=torch.zeros((n_rows, per_row), device=row.device),
    )
    candidates.score[chosen_row, chosen_rank] = -keys[chosen]
    candidates.batch_seq[chosen_row, chosen_rank] = seq[chosen]
    candidates.pos[chosen_row, chosen_rank] = pos[chosen]
    candidates.value[chosen_row, chosen_rank] = value[chosen]
    return candidates


def _logit_lens(
    model: HookedTransformer, sae: SparseAutoencoder, params: DashboardParams, report: Progress
) -> _LogitLens:
    """Each feature's direct effect on the logits, W_dec @ W_U, a chunk of features at a time."""
    unembed = model.W_U.float()  # [d_model, V]
    n_vocab = unembed.shape[1]
    chunk = max(1, LOGIT_LENS_CHUNK_ELEMENTS // n_vocab)
    parts: list[_LogitLens] = []
    for start in range(0, sae.d_sae, chunk):
        logits = sae.W_dec[start : start + chunk].float().to(unembed.device) @ unembed  # [c, V]
        parts.append(_logit_lens_chunk(logits, params))
        report("logit lens", min(start + chunk, sae.d_sae), sae.d_sae)
    return _LogitLens(**{name: torch.cat([getattr(part, name) for part in parts]) for name in _LOGIT_LENS_FIELDS})


_LOGIT_LENS_FIELDS = [field.name for field in fields(_LogitLens)]


def _logit_lens_chunk(logits: Tensor, params: DashboardParams) -> _LogitLens:
    n_tokens = min(params.logit_tokens, logits.shape[1])
    bins = params.logit_hist_bins
    top = logits.topk(n_tokens, dim=1)
    bottom = logits.topk(n_tokens, dim=1, largest=False)
    low, high = logits.amin(dim=1, keepdim=True), logits.amax(dim=1, keepdim=True)  # [c, 1]
    # Bins over [min, max], the last one closed; a constant row lands entirely in bin 0.
    width = torch.where(high > low, high - low, 1.0)
    bin_index = torch.floor((logits - low) / width * bins).clamp(0, bins - 1).long()  # [c, V]
    rows = torch.arange(logits.shape[0], device=logits.device).unsqueeze(1)
    counts = torch.bincount((rows * bins + bin_index).reshape(-1), minlength=logits.shape[0] * bins)
    return _LogitLens(
        top_ids=top.indices,
        top_values=top.values,
        bottom_ids=bottom.indices,
        bottom_values=bottom.values,
        hist_counts=counts.reshape(-1, bins),
        hist_min=low.squeeze(1),
        hist_max=high.squeeze(1),
    )


def _logit_lens_empty(sae: SparseAutoencoder, params: DashboardParams) -> _LogitLens:
    """Features read outside the residual stream (hook_z, MLP neurons) have no logit lens: empty rows."""
    n_features = sae.d_sae
    return _LogitLens(
        top_ids=torch.zeros((n_features, 0), dtype=torch.int64),
        top_values=torch.zeros((n_features, 0)),
        bottom_ids=torch.zeros((n_features, 0), dtype=torch.int64),
        bottom_values=torch.zeros((n_features, 0)),
        hist_counts=torch.zeros((n_features, params.logit_hist_bins), dtype=torch.int64),
        hist_min=torch.zeros(n_features),
        hist_max=torch.zeros(n_features),
    )


def _examples(slots: _Slots, tokens: np.ndarray, params: DashboardParams, slot_shape: tuple[int, ...]) -> Examples:
    """Slots [F * ..., S] on the device -> Examples [F, *slot_shape], with window tokens from the dataset."""
    shape = (-1, *slot_shape)
    seq = slots.seq.cpu().numpy().reshape(shape)
    pos = slots.pos.cpu().numpy().reshape(shape)
    return Examples(
        seq=seq,
        pos=pos,
        values=slots.value.cpu().numpy().astype(np.float32).reshape(shape),
        window_tokens=_window_tokens(tokens, seq, pos, params),
        window_values=slots.window.cpu().numpy().astype(np.float32).reshape((*seq.shape, params.window)),
    )


def _window_tokens(
    tokens: np.ndarray, seq: npt.NDArray[np.int64], pos: npt.NDArray[np.int64], params: DashboardParams
) -> npt.NDArray[np.int32]:
    """Token ids around (seq, pos) [..., W]; -1 outside the sequence and for empty slots."""
    offsets = np.arange(-params.context_before, params.context_after + 1)
    positions = pos[..., None] + offsets  # [..., W]
    inside = (seq[..., None] >= 0) & (positions >= 0) & (positions < tokens.shape[1])
    ids = tokens[np.maximum(seq, 0)[..., None], np.clip(positions, 0, tokens.shape[1] - 1)]
    return np.where(inside, ids, -1).astype(np.int32)
