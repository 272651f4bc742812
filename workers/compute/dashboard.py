"""Neuronpedia-style dashboards for every feature of an SAE at once, in one model pass per token.

The work splits in two so that a run can be sharded across workers:

- `shard_pass` runs the model up to the hook once per token over a range of sequences and encodes
  once. It keeps, for all features at once and on the device, the top examples (one per sequence) and
  the maxima, and it copies every active (token, feature, value) to the host, sorted by a key that
  makes later lookups one binary search each. Device memory is O(d_sae x top_k) plus one batch.
- `dashboards_finish` merges the shards exactly, then makes a second pass over the kept activations
  only (no model, no encoder) for what needs the final maxima: interval counts, histograms and
  interval samples. Windows around examples come from the kept activations too; the logit lens
  (W_dec @ W_U) and the decoder-cosine neighbours need no tokens at all.

`dashboards_compute` is both halves over all tokens, for a run that is not sharded.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from workers.compute.hooks import hook_layer
from workers.compute.neighbours import decoder_neighbours
from workers.compute.params import DashboardParams
from workers.compute.progress import Progress, progress_ignore
from workers.compute.results import ActiveLayout, Examples, FeatureDashboards, ShardState
from workers.compute.sae import SparseAutoencoder

# Logits of one chunk of features ([chunk, d_vocab]) stay below this many elements, ~256 MB in fp32.
LOGIT_LENS_CHUNK_ELEMENTS = 1 << 26
# The vocabulary is multiplied a tile of this many tokens at a time (see _logit_lens).
LOGIT_LENS_VOCAB_TILE = 4096
# One batch's activations are encoded a slice of features at a time, at most this many elements each.
ENCODE_CHUNK_ELEMENTS = 1 << 27
# The second pass reads the kept activations in pieces of this many entries.
ACTIVE_CHUNK_ENTRIES = 1 << 22
DEFAULT_PARAMS = DashboardParams()


@dataclass
class _Top:
    """The best example so far of every feature; k slots per feature, unordered, -inf score when empty."""

    score: Tensor  # [F, k]
    seq: Tensor  # [F, k] int64, -1 when empty
    pos: Tensor  # [F, k] int64


@dataclass
class _Active:
    """Active (token, feature) entries: sorted keys (see ActiveLayout) and their activations."""

    keys: Tensor  # [E] int64, ascending
    values: Tensor  # [E] float32


@dataclass
class _Samples:
    """Interval samples kept so far: at most examples_per_interval per row (feature x interval)."""

    row: Tensor  # [E] int64
    key: Tensor  # [E] float64 random sampling key; the smallest keys win
    entry: Tensor  # [E] int64 index into the active entries


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
    """Dashboards for all features of sae over tokens [N sequences, T]: one shard covering everything.

    The logit lens (W_dec @ W_U) needs features in the residual stream: for any other hook (hook_z,
    MLP neurons) the logit token arrays are empty [F, 0] and the logit histograms all zero.
    """
    state = shard_pass(model, sae, tokens, hook_name, 0, params, progress)
    return dashboards_finish([state], tokens, model, sae, params, progress)


def shard_pass(
    model: HookedTransformer,
    sae: SparseAutoencoder,
    tokens: np.ndarray,
    hook_name: str,
    first_seq: int,
    params: DashboardParams = DEFAULT_PARAMS,
    progress: Progress | None = None,
) -> ShardState:
    """The model pass over tokens [n, T], which are the dataset's sequences first_seq..first_seq+n-1.

    first_seq must be a multiple of params.batch_size, so that shards never split a batch.
    """
    report = progress or progress_ignore
    token_tensor = _tokens_validate(tokens, model, params)
    if first_seq % params.batch_size:
        raise ValueError(f"a shard must start on a batch boundary (batch_size {params.batch_size}), not {first_seq}")
    stop_at_layer = _stop_at_layer(model, hook_name)
    device = next(model.parameters()).device
    if sae.device != device:
        raise ValueError(f"the SAE is on {sae.device} but the model is on {device}; load it on {device}")
    layout = ActiveLayout(d_sae=sae.d_sae, seq_len=token_tensor.shape[1], batch_size=params.batch_size)
    n_seqs, seq_len = token_tensor.shape
    top = _top_empty(sae.d_sae, params.top_k, device)
    max_act = torch.zeros(sae.d_sae, device=device)  # [F] 0 for a feature that never fires
    keys: list[Tensor] = []  # per batch and feature slice, on the host
    values: list[Tensor] = []
    in_residual_space = True
    with torch.inference_mode():
        for start in range(0, n_seqs, params.batch_size):
            batch_tokens = token_tensor[start : start + params.batch_size].to(device)
            raw = _hook_activations(model, batch_tokens, hook_name, stop_at_layer)
            in_residual_space = raw.ndim == 3 and raw.shape[-1] == model.cfg.d_model
            hook_in = _flattened(raw, sae, hook_name).reshape(-1, sae.d_in)  # [b * T, d_in]
            for features in _feature_slices(sae.d_sae, hook_in.shape[0]):
                acts = _feature_major(sae.encode_features(hook_in, features.start, features.stop), seq_len)
                _top_update(top, max_act, acts, features, first_seq + start, _first_pos(params))
                batch_keys, batch_values = _active_entries(acts, features, first_seq + start, layout)
                keys.append(batch_keys.cpu())
                values.append(batch_values.cpu())
            report("forward", (start + batch_tokens.shape[0]) * seq_len, n_seqs * seq_len)
    return ShardState(
        first_seq=first_seq,
        n_seqs=n_seqs,
        layout=layout,
        top_score=top.score.cpu().numpy(),
        top_seq=top.seq.cpu().numpy(),
        top_pos=top.pos.cpu().numpy(),
        max_act=max_act.cpu().numpy(),
        active_keys=torch.cat(keys).numpy() if keys else np.zeros(0, dtype=np.int64),
        active_values=torch.cat(values).numpy() if values else np.zeros(0, dtype=np.float32),
        in_residual_space=in_residual_space,
    )


def dashboards_finish(
    states: Sequence[ShardState],
    tokens: np.ndarray,
    model: HookedTransformer,
    sae: SparseAutoencoder,
    params: DashboardParams = DEFAULT_PARAMS,
    progress: Progress | None = None,
) -> FeatureDashboards:
    """Merge the shards of a run over tokens [N, T] (all of its sequences) and finish the dashboards."""
    report = progress or progress_ignore
    ordered = _shards_check(states, tokens, sae)
    device = sae.device
    layout = ordered[0].layout
    with torch.inference_mode():
        top = _top_merged(ordered, params.top_k)
        max_act = torch.from_numpy(np.max([state.max_act for state in ordered], axis=0))
        active = _Active(
            keys=torch.from_numpy(np.concatenate([state.active_keys for state in ordered])),
            values=torch.from_numpy(np.concatenate([state.active_values for state in ordered])),
        )
        samples, interval_counts, act_hist = _interval_pass(active, max_act, layout, params, device, report)
        if all(state.in_residual_space for state in ordered):
            logit_lens = _logit_lens(model, sae, params, report)
        else:
            logit_lens = _logit_lens_empty(sae, params)
        report("neighbours", 0, sae.d_sae)
        neighbour_ids, neighbour_cosines = decoder_neighbours(sae.W_dec, params.neighbours)
        report("neighbours", sae.d_sae, sae.d_sae)
        top_examples = _top_examples(top, active, layout, tokens, params)
        interval_examples = _interval_examples(samples, active, layout, tokens, params)
    n_tokens = tokens.shape[0] * (tokens.shape[1] - _first_pos(params))
    return FeatureDashboards(
        n_tokens=n_tokens,
        frac_nonzero=interval_counts.sum(dim=1).numpy().astype(np.float64) / n_tokens,
        max_act=max_act.numpy().astype(np.float32),
        top=top_examples,
        intervals=interval_examples,
        interval_counts=interval_counts.numpy().astype(np.int64),
        act_hist_counts=act_hist.numpy().astype(np.int64),
        logit_top_ids=logit_lens.top_ids.cpu().numpy().astype(np.int64),
        logit_top_values=logit_lens.top_values.cpu().numpy().astype(np.float32),
        logit_bottom_ids=logit_lens.bottom_ids.cpu().numpy().astype(np.int64),
        logit_bottom_values=logit_lens.bottom_values.cpu().numpy().astype(np.float32),
        logit_hist_counts=logit_lens.hist_counts.cpu().numpy().astype(np.int64),
        logit_hist_min=logit_lens.hist_min.cpu().numpy().astype(np.float32),
        logit_hist_max=logit_lens.hist_max.cpu().numpy().astype(np.float32),
        neighbour_ids=neighbour_ids,
        neighbour_cosines=neighbour_cosines,
    )


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
    layer = hook_layer(hook_name)
    if layer is not None:
        return layer + 1
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


def _flattened(raw: Tensor, sae: SparseAutoencoder, hook_name: str) -> Tensor:
    """[b, T, *rest] -> [b, T, d_in]; hook_z's heads are concatenated as SAELens does."""
    flat = raw.reshape(raw.shape[0], raw.shape[1], -1)
    if flat.shape[-1] != sae.d_in:
        raise ValueError(
            f"hook {hook_name} gives {list(raw.shape[2:])} values per token, {flat.shape[-1]} in all, "
            f"but the SAE has d_in={sae.d_in}"
        )
    return flat


def _feature_slices(d_sae: int, n_tokens: int) -> list[slice]:
    """Slices of features small enough that [n_tokens, slice] activations stay within the budget."""
    width = max(1, min(d_sae, ENCODE_CHUNK_ELEMENTS // max(n_tokens, 1)))
    return [slice(start, min(start + width, d_sae)) for start in range(0, d_sae, width)]


def _feature_major(acts: Tensor, seq_len: int) -> Tensor:
    """[b * T, f] activations -> [f, b, T] float32, contiguous."""
    return acts.T.float().contiguous().view(acts.shape[1], -1, seq_len)


def _top_empty(d_sae: int, k: int, device: torch.device) -> _Top:
    return _Top(
        score=torch.full((d_sae, k), -math.inf, device=device),
        seq=torch.full((d_sae, k), -1, dtype=torch.int64, device=device),
        pos=torch.full((d_sae, k), -1, dtype=torch.int64, device=device),
    )


def _top_update(top: _Top, max_act: Tensor, acts: Tensor, features: slice, first_seq: int, first_pos: int) -> None:
    """Offer each sequence's strongest token of every feature in the slice; at most one per sequence.

    acts [f, b, T] count from first_pos on: position 0 is BOS when it is skipped.
    """
    value, pos = acts[:, :, first_pos:].max(dim=2)  # [f, b]
    pos = pos + first_pos
    max_act[features] = torch.maximum(max_act[features], value.amax(dim=1))
    fired = value > 0
    score = value.masked_fill(~fired, -math.inf)
    seq = torch.where(fired, torch.arange(value.shape[1], device=value.device) + first_seq, -1)
    pos = torch.where(fired, pos, -1)
    merged_score, best = torch.cat([top.score[features], score], dim=1).topk(top.score.shape[1], dim=1)
    top.score[features] = merged_score
    top.seq[features] = torch.cat([top.seq[features], seq], dim=1).gather(1, best)
    top.pos[features] = torch.cat([top.pos[features], pos], dim=1).gather(1, best)


def _active_entries(acts: Tensor, features: slice, first_seq: int, layout: ActiveLayout) -> tuple[Tensor, Tensor]:
    """Keys and values of the active entries of acts [f, b, T], ascending by key."""
    _, n_seqs, seq_len = acts.shape
    flat = acts.reshape(-1)
    index = (flat > 0).nonzero().squeeze(1)  # feature-major, so already in key order
    feature = index // (n_seqs * seq_len) + features.start
    within = index % (n_seqs * seq_len) + (first_seq % layout.batch_size) * seq_len
    block = first_seq // layout.batch_size
    return (block * layout.d_sae + feature) * layout.block_tokens + within, flat[index]


def _shards_check(states: Sequence[ShardState], tokens: np.ndarray, sae: SparseAutoencoder) -> list[ShardState]:
    """The shards in dataset order, after checking they tile the run's sequences exactly once."""
    if not states:
        raise ValueError("a run needs at least one shard")
    ordered = sorted(states, key=lambda state: state.first_seq)
    expected = 0
    for state in ordered:
        if state.first_seq != expected:
            raise ValueError(f"shards leave out or repeat sequences around sequence {min(state.first_seq, expected)}")
        if state.layout != ordered[0].layout or state.layout.d_sae != sae.d_sae:
            raise ValueError("shards were computed with different SAEs or settings")
        expected += state.n_seqs
    if expected != tokens.shape[0] or ordered[0].layout.seq_len != tokens.shape[1]:
        raise ValueError(f"shards cover {expected} sequences but the run has {tokens.shape[0]}")
    return ordered


def _top_merged(states: Sequence[ShardState], k: int) -> _Top:
    """The k best of all shards' top examples per feature, best first, empty slots last."""
    score = torch.from_numpy(np.concatenate([state.top_score for state in states], axis=1))
    seq = torch.from_numpy(np.concatenate([state.top_seq for state in states], axis=1))
    pos = torch.from_numpy(np.concatenate([state.top_pos for state in states], axis=1))
    # A stable sort keeps equal scores in dataset order, so ties break the same however a run is sharded.
    order = score.sort(dim=1, descending=True, stable=True).indices[:, :k]
    return _Top(score=score.gather(1, order), seq=seq.gather(1, order), pos=pos.gather(1, order))


def _interval_pass(
    active: _Active, max_act: Tensor, layout: ActiveLayout, params: DashboardParams, device: torch.device,
    report: Progress,
) -> tuple[_Samples, Tensor, Tensor]:
    """Interval samples, interval counts [F, n] and the act histogram [F, bins] from the kept entries."""
    n_rows = layout.d_sae * params.n_intervals
    interval_counts = torch.zeros(n_rows, dtype=torch.int64, device=device)
    act_hist = torch.zeros(layout.d_sae * params.act_hist_bins, dtype=torch.int64, device=device)
    samples = _Samples(
        row=torch.zeros(0, dtype=torch.int64, device=device),
        key=torch.zeros(0, dtype=torch.float64, device=device),
        entry=torch.zeros(0, dtype=torch.int64, device=device),
    )
    first_pos = _first_pos(params)
    safe_max = torch.where(max_act > 0, max_act, 1.0).to(device)  # features that never fire have no entries
    total = active.keys.shape[0]
    for start in range(0, total, ACTIVE_CHUNK_ENTRIES):
        keys = active.keys[start : start + ACTIVE_CHUNK_ENTRIES].to(device)
        values = active.values[start : start + ACTIVE_CHUNK_ENTRIES].to(device)
        counted = layout.pos(keys) >= first_pos  # BOS entries are kept for windows but count nowhere
        feature = layout.feature(keys)
        fraction = values / safe_max[feature]  # in (0, 1] where counted
        weight = counted.long()
        act_hist += torch.bincount(
            feature * params.act_hist_bins + _bin_index(fraction, params.act_hist_bins),
            weights=weight, minlength=act_hist.shape[0],
        ).long()
        row = feature * params.n_intervals + _bin_index(fraction, params.n_intervals)
        interval_counts += torch.bincount(row, weights=weight, minlength=n_rows).long()
        entry = torch.arange(start, start + keys.shape[0], device=device)
        sample_keys = sample_keys_of(entry, params.seed)
        offered = _Samples(row[counted], sample_keys[counted], entry[counted])
        samples = _samples_merged(samples, offered, params.examples_per_interval, n_rows)
        report("intervals", start + keys.shape[0], total)
    if total == 0:
        report("intervals", 0, 0)
    return (
        samples,
        interval_counts.reshape(layout.d_sae, params.n_intervals).cpu(),
        act_hist.reshape(layout.d_sae, params.act_hist_bins).cpu(),
    )


def sample_keys_of(entry: Tensor, seed: int) -> Tensor:
    """A uniform key in [0, 1) for each kept entry's index [n] (int64): splitmix64 of seed and index, so the
    interval samples are the same on every device and whatever the chunks (a generator's stream is not: CUDA's
    Philox draws depend on how the draws are split into calls)."""
    z = (entry + 1) * _SPLITMIX_GAMMA + _signed(seed * _SPLITMIX_SEED_MIX % (1 << 64))  # int64 arithmetic wraps
    z = (z ^ _shifted_right(z, 30)) * _SPLITMIX_MIX_1
    z = (z ^ _shifted_right(z, 27)) * _SPLITMIX_MIX_2
    z = z ^ _shifted_right(z, 31)
    return _shifted_right(z, 11).double() / float(1 << 53)  # the top 53 bits: exact in float64


def _shifted_right(z: Tensor, bits: int) -> Tensor:
    """z >> bits as an unsigned 64-bit shift (torch's >> on int64 keeps the sign)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def _signed(constant: int) -> int:
    """A 64-bit unsigned constant as the int64 with the same bits."""
    return constant - (1 << 64) if constant >= 1 << 63 else constant


_SPLITMIX_GAMMA = _signed(0x9E3779B97F4A7C15)
_SPLITMIX_SEED_MIX = _signed(0xD1B54A32D192ED03)
_SPLITMIX_MIX_1 = _signed(0xBF58476D1CE4E5B9)
_SPLITMIX_MIX_2 = _signed(0x94D049BB133111EB)


def _bin_index(fraction: Tensor, n_bins: int) -> Tensor:
    """Which of n_bins equal bins over (0, 1] holds fraction (value / max); bins are closed on the right."""
    return (torch.ceil(fraction * n_bins) - 1).clamp(0, n_bins - 1).long()


def _samples_merged(kept: _Samples, offered: _Samples, per_row: int, n_rows: int) -> _Samples:
    """Per row, the per_row entries with the smallest keys among kept and offered: a uniform sample.

    Keeping the smallest random keys (bottom-k sampling) makes every active token of a row equally likely
    to be chosen, whatever the chunk boundaries, without knowing the counts in advance.
    """
    if kept.row.shape[0]:
        # A row that is full takes only keys below its largest kept one: most offers end here, unsorted.
        counts = torch.bincount(kept.row, minlength=n_rows)
        largest = torch.zeros(n_rows, dtype=kept.key.dtype, device=kept.key.device)
        largest = largest.scatter_reduce(0, kept.row, kept.key, reduce="amax")
        bound = torch.where(counts >= per_row, largest, 1.0)
        fresh = offered.key < bound[offered.row]
        offered = _Samples(offered.row[fresh], offered.key[fresh], offered.entry[fresh])
    row = torch.cat([kept.row, offered.row])
    key = torch.cat([kept.key, offered.key])
    # Keys lie in [0, 1), so row + key orders by row, then by key within the row.
    order = (row.double() + key).argsort()
    sorted_rows = row[order]
    rank = torch.arange(order.shape[0], device=row.device) - torch.searchsorted(sorted_rows, sorted_rows)
    chosen = order[rank < per_row]
    return _Samples(row=row[chosen], key=key[chosen], entry=torch.cat([kept.entry, offered.entry])[chosen])


def _top_examples(
    top: _Top, active: _Active, layout: ActiveLayout, tokens: np.ndarray, params: DashboardParams
) -> Examples:
    feature = torch.arange(layout.d_sae).unsqueeze(1).expand_as(top.seq)
    value = torch.where(top.seq >= 0, top.score, 0.0)
    return _examples(top.seq, top.pos, feature, value, active, layout, tokens, params, (params.top_k,))


def _interval_examples(
    samples: _Samples, active: _Active, layout: ActiveLayout, tokens: np.ndarray, params: DashboardParams
) -> Examples:
    """Samples -> [F * n_intervals, per_interval] slots ordered by sampling key, empty slots last."""
    per_row = params.examples_per_interval
    n_rows = layout.d_sae * params.n_intervals
    row, key, entry = samples.row.cpu(), samples.key.cpu(), samples.entry.cpu()
    order = (row.double() + key).argsort()
    row, entry = row[order], entry[order]
    rank = torch.arange(row.shape[0]) - torch.searchsorted(row, row)
    seq = torch.full((n_rows, per_row), -1, dtype=torch.int64)
    pos = torch.full((n_rows, per_row), -1, dtype=torch.int64)
    value = torch.zeros((n_rows, per_row))
    keys = active.keys[entry]
    seq[row, rank], pos[row, rank] = layout.seq(keys), layout.pos(keys)
    value[row, rank] = active.values[entry]
    feature = (torch.arange(n_rows) // params.n_intervals).unsqueeze(1).expand_as(seq)
    slot_shape = (params.n_intervals, per_row)
    return _examples(seq, pos, feature, value, active, layout, tokens, params, slot_shape)


def _examples(
    seq: Tensor, pos: Tensor, feature: Tensor, value: Tensor, active: _Active, layout: ActiveLayout,
    tokens: np.ndarray, params: DashboardParams, slot_shape: tuple[int, ...],
) -> Examples:
    """Slots [F * ..., S] -> Examples [F, *slot_shape], with window tokens and values."""
    shape = (-1, *slot_shape)
    window = _window_values(seq.reshape(-1), pos.reshape(-1), feature.reshape(-1), active, layout, params)
    seq_array, pos_array = seq.numpy().reshape(shape), pos.numpy().reshape(shape)
    return Examples(
        seq=seq_array,
        pos=pos_array,
        values=value.numpy().astype(np.float32).reshape(shape),
        window_tokens=_window_tokens(tokens, seq_array, pos_array, params),
        window_values=window.numpy().reshape((*seq_array.shape, params.window)),
    )


def _window_values(
    seq: Tensor, pos: Tensor, feature: Tensor, active: _Active, layout: ActiveLayout, params: DashboardParams
) -> Tensor:
    """[E, W] each example's feature activation around its position; 0 where inactive, NaN outside.

    A feature's entries for one sequence are contiguous in key order, so the entries inside a window
    are one range of the kept entries, found with two binary searches per example.
    """
    offsets = torch.arange(-params.context_before, params.context_after + 1)  # [W]
    positions = pos.unsqueeze(1) + offsets  # [E, W]
    inside = (seq.unsqueeze(1) >= 0) & (positions >= 0) & (positions < layout.seq_len)
    window = torch.zeros(positions.shape, dtype=torch.float32).masked_fill(~inside, math.nan)
    filled = seq >= 0
    base = layout.key(seq.clamp(min=0), torch.zeros_like(pos), feature)  # the key of position 0
    first = base + (pos - params.context_before).clamp(min=0)
    last = base + (pos + params.context_after).clamp(max=layout.seq_len - 1)
    begin = torch.searchsorted(active.keys, first)
    end = torch.where(filled, torch.searchsorted(active.keys, last, right=True), begin)
    counts = end - begin
    example = torch.repeat_interleave(torch.arange(seq.shape[0]), counts)
    entry = begin[example] + torch.arange(example.shape[0]) - (counts.cumsum(0) - counts)[example]
    column = active.keys[entry] - base[example] - pos[example] + params.context_before
    window[example, column] = active.values[entry]
    return window


def _window_tokens(
    tokens: np.ndarray, seq: npt.NDArray[np.int64], pos: npt.NDArray[np.int64], params: DashboardParams
) -> npt.NDArray[np.int32]:
    """Token ids around (seq, pos) [..., W]; -1 outside the sequence and for empty slots."""
    offsets = np.arange(-params.context_before, params.context_after + 1)
    positions = pos[..., None] + offsets  # [..., W]
    inside = (seq[..., None] >= 0) & (positions >= 0) & (positions < tokens.shape[1])
    ids = tokens[np.maximum(seq, 0)[..., None], np.clip(positions, 0, tokens.shape[1] - 1)]
    return np.where(inside, ids, -1).astype(np.int32)


def _logit_lens(
    model: HookedTransformer, sae: SparseAutoencoder, params: DashboardParams, report: Progress
) -> _LogitLens:
    """Each feature's direct effect on the logits, W_dec @ W_U, in float32, a chunk of features at a time.

    Each chunk's logits are written tile by tile of the vocabulary into one reused buffer: a product
    whose right-hand panel stays in cache runs markedly faster on the CPU than one [chunk, V] product.
    """
    unembed = model.W_U.float()  # [d_model, V]
    n_vocab = unembed.shape[1]
    chunk = max(1, min(sae.d_sae, LOGIT_LENS_CHUNK_ELEMENTS // n_vocab))
    tiles = [
        (start, unembed[:, start : start + LOGIT_LENS_VOCAB_TILE].contiguous())
        for start in range(0, n_vocab, LOGIT_LENS_VOCAB_TILE)
    ]
    buffer = torch.empty((chunk, n_vocab), device=unembed.device)
    bin_buffer = torch.empty((chunk, n_vocab), dtype=torch.int32, device=unembed.device)
    parts: list[_LogitLens] = []
    for start in range(0, sae.d_sae, chunk):
        rows = sae.W_dec[start : start + chunk].float().to(unembed.device)  # [c, d_model]
        logits = buffer[: rows.shape[0]]
        for first_token, tile in tiles:
            torch.mm(rows, tile, out=logits[:, first_token : first_token + tile.shape[1]])
        parts.append(_logit_lens_chunk(logits, bin_buffer[: rows.shape[0]], params))
        report("logit lens", min(start + chunk, sae.d_sae), sae.d_sae)
    return _LogitLens(**{name: torch.cat([getattr(part, name) for part in parts]) for name in _LOGIT_LENS_FIELDS})


_LOGIT_LENS_FIELDS = [field.name for field in fields(_LogitLens)]


def _logit_lens_chunk(logits: Tensor, bin_index: Tensor, params: DashboardParams) -> _LogitLens:
    """Top and bottom tokens and the histogram of one chunk of features' logits [c, V].

    Both logits and bin_index ([c, V] int32) are overwritten: they are the largest tensors of the whole
    pass, binned in place because every fresh copy costs more time than the arithmetic.
    """
    n_tokens = min(params.logit_tokens, logits.shape[1])
    bins = params.logit_hist_bins
    top = logits.topk(n_tokens, dim=1)
    bottom = logits.topk(n_tokens, dim=1, largest=False)
    low, high = bottom.values[:, :1], top.values[:, :1]  # [c, 1]
    # Bins over [min, max], the last one closed; a constant row lands entirely in bin 0.
    scale = bins / torch.where(high > low, high - low, 1.0)
    bin_index.copy_(logits.sub_(low).mul_(scale))  # float -> int32 truncates, which is floor here as x >= 0
    bin_index.clamp_(max=bins - 1)
    bin_index += torch.arange(0, logits.shape[0] * bins, bins, dtype=torch.int32, device=logits.device).unsqueeze(1)
    counts = torch.bincount(bin_index.view(-1), minlength=logits.shape[0] * bins)
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
