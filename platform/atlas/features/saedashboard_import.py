"""Import SAEDashboard's Neuronpedia batch files (batch-N.json) as an SAE's published dashboards, with no GPU.

The files are what `NeuronpediaConverter.convert_to_np_json` writes: {"features": [{"feature_index",
"frac_nonzero", "pos_str", "pos_values", "neg_str", "neg_values", "freq_hist_data_bar_values/_heights",
"logits_hist_data_bar_values/_heights", "n_prompts_total", "n_tokens_in_prompt", "activations": [{"tokens",
"values", "bin_min", "bin_max", "bin_contains", ...}]}]}. Top examples carry bin_min -1 and bin_max the feature's
maximum; interval examples carry their interval, which SAEDashboard draws as equal parts of (0, max] like Atlas.
Tokens are vocabulary pieces (`Ġthe`, sometimes with Neuronpedia's HTML escapes), turned back into token ids.

Three things cannot carry over exactly, and are approximated (the README says so too):
- the activation histogram's bars span [smallest nonzero, max] in SAEDashboard, (0, max] in Atlas: counts are
  re-binned by each bar's centre;
- bin_contains is kept as SAEDashboard wrote it (the share of all tokens in the interval, zeros included in the
  lowest), which is what Neuronpedia shows for the same files;
- each example's chosen token (the one shown bold, whose value the page prints) comes from its layout. Windows
  (written with a buffer) put it at the same place in every example, read from where each feature's first top
  example peaks. Whole sequences (buffer=None, what Neuronpedia's runner writes; an example as long as the prompt
  less one token) carry it as qualifying_token_index, which for windows counts from the start of the sequence
  rather than of the window and so is not used there. A whole sequence whose index is missing or out of range
  takes a top example's peak, or an interval example's largest value inside its interval.
"""

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from django.db import transaction
from django.utils import timezone

from atlas.datasets.models import Dataset
from atlas.features.packing import Layout, features_pack, token_bytes_for
from atlas.features.services import PackedFeatures, run_features_publish
from atlas.lms.models import LanguageModel
from atlas.lms.selectors import tokenizer_for, vocabulary_for
from atlas.saes.models import DashboardRun, Sae
from workers.compute.model_source import LanguageModelError
from workers.compute.params import DashboardParams

# How an imported run shows where its numbers came from, on the SAE page and in GET /api/runs/<id>.
IMPORTED_DEVICE = "imported from SAEDashboard"
IMPORTED_PHASE = "imported"
# SAEDashboard's Neuronpedia runner writes these pieces escaped for HTML (sae_dashboard.utils_fns.HTML_ANOMALIES).
_HTML_ANOMALIES = {
    "âĢĶ": "&mdash;", "âĢĵ": "&ndash;", "âĢĭ": "&#8203;", "âĢľ": "&ldquo;", "âĢĿ": "&rdquo;", "âĢĺ": "&lsquo;",
    "âĢĻ": "&rsquo;", "Ġ": "&nbsp;", "Ċ": "&bsol;n", "ĉ": "&bsol;t",
}
_TOP_BIN = -1


class SaeDashboardImportError(ValueError):
    """A batch file that cannot be imported; the message names the file and the field."""


@dataclass(frozen=True)
class ImportedExample:
    token_ids: list[int]
    values: list[float]
    bin_min: float
    bin_max: float
    bin_contains: float
    # SAEDashboard's qualifying_token_index: the position the example was chosen for (see the module docstring).
    qualifying: int | None = None

    @property
    def is_top(self) -> bool:
        return self.bin_min == _TOP_BIN


@dataclass(frozen=True)
class ImportedFeature:
    index: int
    frac_nonzero: float
    pos_ids: list[int]
    pos_values: list[float]
    neg_ids: list[int]
    neg_values: list[float]
    act_hist_centers: list[float]
    act_hist_heights: list[float]
    logit_hist_centers: list[float]
    logit_hist_heights: list[float]
    examples: list[ImportedExample]
    n_prompts: int
    n_tokens_in_prompt: int
    max_act: float


def _max_act(examples: list[ImportedExample]) -> float:
    """SAEDashboard titles the top group with the feature's maximum, which its top examples carry as bin_max."""
    tops = [example.bin_max for example in examples if example.is_top]
    return max(tops, default=max((max(e.values, default=0.0) for e in examples), default=0.0))


class _Reader:
    """Typed reads of one JSON value that name the file and field in every error."""

    def __init__(self, where: str, value: Any) -> None:
        self.where, self.value = where, value

    def _fail(self, expected: str) -> SaeDashboardImportError:
        return SaeDashboardImportError(f"{self.where}: expected {expected}, found {type(self.value).__name__}.")

    def field(self, name: str) -> "_Reader":
        if not isinstance(self.value, dict):
            raise self._fail("an object")
        if name not in self.value:
            raise SaeDashboardImportError(f"{self.where}: missing field '{name}'.")
        return _Reader(f"{self.where}.{name}", self.value[name])

    def items(self) -> list["_Reader"]:
        if not isinstance(self.value, list):
            raise self._fail("a list")
        return [_Reader(f"{self.where}[{i}]", item) for i, item in enumerate(self.value)]

    def number(self) -> float:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float) or not np.isfinite(self.value):
            raise self._fail("a finite number")
        return float(self.value)

    def integer(self) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self._fail("an integer")
        return self.value

    def numbers(self) -> list[float]:
        return [item.number() for item in self.items()]

    def strings(self) -> list[str]:
        items = self.items()
        if not all(isinstance(item.value, str) for item in items):
            raise self._fail("a list of strings")
        return [item.value for item in items]


class TokenIds:
    """Token strings as SAEDashboard writes them (vocabulary pieces, maybe HTML-escaped) back to token ids."""

    def __init__(self, language_model: LanguageModel) -> None:
        display = vocabulary_for(language_model)
        counts = Counter(display)
        # Display text is the fallback, where it names one token; the tokenizer's own pieces win.
        self.ids = {text: token_id for token_id, text in enumerate(display) if counts[text] == 1}
        for piece, token_id in _tokenizer_pieces(language_model).items():
            self.ids[piece] = token_id
            self.ids.setdefault(_html_escaped(piece), token_id)

    def resolve(self, reader: _Reader) -> list[int]:
        ids = []
        for i, token in enumerate(reader.strings()):
            token_id = self.ids.get(token)
            if token_id is None:
                raise SaeDashboardImportError(f"{reader.where}[{i}]: token {token!r} is not in the model's vocabulary; "
                                              "were these dashboards made for another model?")
            ids.append(token_id)
        return ids


def _tokenizer_pieces(language_model: LanguageModel) -> dict[str, int]:
    try:
        vocab = tokenizer_for(language_model).get_vocab()
    except (LanguageModelError, OSError, ValueError):
        return {}  # no tokenizer here (a hub model offline): display text alone must do
    return vocab


def _html_escaped(piece: str) -> str:
    for raw, escaped in _HTML_ANOMALIES.items():
        piece = piece.replace(raw, escaped)
    return piece


def _example_read(reader: _Reader, tokens: TokenIds) -> ImportedExample:
    token_ids = tokens.resolve(reader.field("tokens"))
    values = reader.field("values").numbers()
    if len(values) != len(token_ids):
        raise SaeDashboardImportError(f"{reader.where}.values: {len(values)} values for {len(token_ids)} tokens.")
    qualifying = reader.field("qualifying_token_index").integer() if "qualifying_token_index" in reader.value else None
    return ImportedExample(token_ids, values, reader.field("bin_min").number(), reader.field("bin_max").number(),
                           reader.field("bin_contains").number(), qualifying)


def _feature_read(reader: _Reader, tokens: TokenIds, d_sae: int) -> ImportedFeature:
    index = reader.field("feature_index").integer()
    if not 0 <= index < d_sae:
        raise SaeDashboardImportError(f"{reader.where}.feature_index: {index} is outside the SAE's 0..{d_sae - 1}.")
    pos_ids, neg_ids = tokens.resolve(reader.field("pos_str")), tokens.resolve(reader.field("neg_str"))
    pos_values, neg_values = reader.field("pos_values").numbers(), reader.field("neg_values").numbers()
    if len(pos_values) != len(pos_ids) or len(neg_values) != len(neg_ids):
        raise SaeDashboardImportError(f"{reader.where}: pos_str/neg_str and their values differ in length.")
    examples = [_example_read(item, tokens) for item in reader.field("activations").items()]
    return ImportedFeature(
        index=index,
        frac_nonzero=reader.field("frac_nonzero").number(),
        pos_ids=pos_ids, pos_values=pos_values, neg_ids=neg_ids, neg_values=neg_values,
        act_hist_centers=reader.field("freq_hist_data_bar_values").numbers(),
        act_hist_heights=reader.field("freq_hist_data_bar_heights").numbers(),
        logit_hist_centers=reader.field("logits_hist_data_bar_values").numbers(),
        logit_hist_heights=reader.field("logits_hist_data_bar_heights").numbers(),
        examples=examples,
        n_prompts=reader.field("n_prompts_total").integer(),
        n_tokens_in_prompt=reader.field("n_tokens_in_prompt").integer(),
        max_act=_max_act(examples),
    )


def _file_read(path: Path, tokens: TokenIds, d_sae: int) -> list[ImportedFeature]:
    try:
        batch = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SaeDashboardImportError(f"{path.name}: not a readable JSON file ({error}).") from error
    return [_feature_read(item, tokens, d_sae) for item in _Reader(path.name, batch).field("features").items()]


def saedashboard_files_read(*, sae: Sae, files: Sequence[Path]) -> list[ImportedFeature]:
    """Every feature of the files, checked; a feature in two files is an error."""
    tokens = TokenIds(sae.language_model)
    features: dict[int, ImportedFeature] = {}
    for path in files:
        for feature in _file_read(path, tokens, sae.d_sae):
            if feature.index in features:
                raise SaeDashboardImportError(f"{path.name}: feature {feature.index} appears twice.")
            features[feature.index] = feature
    if not features:
        raise SaeDashboardImportError("The files hold no features.")
    return sorted(features.values(), key=lambda feature: feature.index)


def _live_examples(feature: ImportedFeature) -> list[ImportedExample]:
    # A feature that never fired still gets SAEDashboard's all-zero "examples"; Atlas shows none.
    return feature.examples if feature.max_act > 0 else []


def _interval_count(feature: ImportedFeature) -> int | None:
    widths = [e.bin_max - e.bin_min for e in _live_examples(feature) if not e.is_top and e.bin_max > e.bin_min]
    return round(feature.max_act / max(widths)) if widths else None


def _interval_of(example: ImportedExample, max_act: float, n_intervals: int) -> int:
    return min(max(round(example.bin_min / max_act * n_intervals), 0), n_intervals - 1)


def _chosen_token(example: ImportedExample, n_tokens_in_prompt: int, window_focus: int) -> int:
    if len(example.values) < n_tokens_in_prompt - 1:
        return window_focus
    if example.qualifying is not None and 0 <= example.qualifying < len(example.values):
        return example.qualifying
    values = np.asarray(example.values, dtype=np.float64)
    if not example.is_top:
        inside = (values >= example.bin_min) & (values <= example.bin_max)
        if inside.any():
            return int(np.argmax(np.where(inside, values, -np.inf)))
    return int(np.argmax(values)) if values.size else 0


def _layout(features: list[ImportedFeature]) -> Layout:
    """One layout for all features: SAEDashboard writes the same window and group sizes for every feature."""
    live = [feature for feature in features if _live_examples(feature)]
    examples = [example for feature in live for example in feature.examples]
    peaks = Counter(int(np.argmax(next(e for e in f.examples if e.is_top).values))
                    for f in live if any(e.is_top for e in f.examples))
    counts = Counter(count for count in map(_interval_count, live) if count)
    n_intervals = counts.most_common(1)[0][0] if counts else 0
    per_interval = max((Counter(_interval_of(e, f.max_act, n_intervals) for e in f.examples if not e.is_top)
                        .most_common(1)[0][1] for f in live if any(not e.is_top for e in f.examples)), default=0)
    return Layout(
        token_bytes=token_bytes_for(max((max(e.token_ids, default=-1) for e in examples), default=-1)),
        window=max((len(example.values) for example in examples), default=1),
        focus=peaks.most_common(1)[0][0] if peaks else 0,
        n_top=max((sum(e.is_top for e in f.examples) for f in live), default=0),
        n_intervals=n_intervals,
        per_interval=per_interval if n_intervals else 0,
        logit_tokens=max(max(len(f.pos_ids), len(f.neg_ids)) for f in features),
        act_hist_bins=max(len(f.act_hist_heights) for f in features),
        logit_hist_bins=max(len(f.logit_hist_heights) for f in features),
        neighbours=0,  # SAEDashboard writes no decoder-cosine neighbours
    )


def _act_hist_rebinned(feature: ImportedFeature, bins: int) -> npt.NDArray[np.int64]:
    """SAEDashboard's bars over [smallest nonzero, max] counted again in Atlas's equal bins over (0, max]."""
    counts = np.zeros(bins, dtype=np.int64)
    if feature.max_act <= 0:
        return counts
    for center, height in zip(feature.act_hist_centers, feature.act_hist_heights, strict=True):
        counts[min(max(int(center / feature.max_act * bins), 0), bins - 1)] += round(height)
    return counts


def _logit_hist_range(centers: list[float]) -> tuple[float, float]:
    if len(centers) < 2:
        return (centers[0], centers[0]) if centers else (0.0, 0.0)
    half_width = (centers[-1] - centers[0]) / (len(centers) - 1) / 2
    return centers[0] - half_width, centers[-1] + half_width


@dataclass
class _Arrays:
    """The arrays features_pack takes, for every feature of the SAE; features not in the files stay empty."""

    layout: Layout
    d_sae: int

    def __post_init__(self) -> None:
        layout, n = self.layout, self.d_sae
        slots = layout.slots
        self.frac_nonzero = np.zeros(n)
        self.max_act = np.zeros(n, dtype=np.float32)
        self.interval_shares = np.zeros((n, layout.n_intervals))
        self.act_hist_counts = np.zeros((n, layout.act_hist_bins), dtype=np.int64)
        self.logit_hist_counts = np.zeros((n, layout.logit_hist_bins), dtype=np.int64)
        self.logit_hist_min = np.zeros(n, dtype=np.float32)
        self.logit_hist_max = np.zeros(n, dtype=np.float32)
        self.logit_ids = {side: np.zeros((n, layout.logit_tokens), dtype=np.int64) for side in ("top", "bottom")}
        self.logit_values = {side: np.zeros((n, layout.logit_tokens), dtype=np.float32) for side in ("top", "bottom")}
        self.window_tokens = np.full((n, slots, layout.window), -1, dtype=np.int32)
        self.window_values = np.full((n, slots, layout.window), np.nan, dtype=np.float32)
        self.example_focus = np.full((n, slots), layout.focus, dtype=np.int64)

    def fill(self, feature: ImportedFeature) -> None:
        i = feature.index
        self.frac_nonzero[i], self.max_act[i] = feature.frac_nonzero, feature.max_act
        self.act_hist_counts[i, : self.layout.act_hist_bins] = _act_hist_rebinned(feature, self.layout.act_hist_bins)
        self.logit_hist_counts[i, : len(feature.logit_hist_heights)] = np.rint(feature.logit_hist_heights)
        self.logit_hist_min[i], self.logit_hist_max[i] = _logit_hist_range(feature.logit_hist_centers)
        for side, ids, values in (("top", feature.pos_ids, feature.pos_values),
                                  ("bottom", feature.neg_ids, feature.neg_values)):
            self.logit_ids[side][i, : len(ids)], self.logit_values[side][i, : len(values)] = ids, values
        self._examples_fill(feature)

    def _examples_fill(self, feature: ImportedFeature) -> None:
        layout, i = self.layout, feature.index
        next_top, next_in_interval = 0, Counter[int]()
        for example in _live_examples(feature):
            if example.is_top:
                slot, next_top = next_top, next_top + 1
            elif layout.n_intervals == 0:
                continue  # intervals of zero width: there is no interval to show them in
            else:
                interval = _interval_of(example, feature.max_act, layout.n_intervals)
                self.interval_shares[i, interval] = example.bin_contains
                rank = next_in_interval[interval]
                next_in_interval[interval] += 1
                slot = layout.n_top + interval * layout.per_interval + rank
            self.window_tokens[i, slot, : len(example.token_ids)] = example.token_ids
            self.window_values[i, slot, : len(example.values)] = example.values
            self.example_focus[i, slot] = _chosen_token(example, feature.n_tokens_in_prompt, layout.focus)

    def pack(self) -> PackedFeatures:
        dashboards = features_pack(
            focus=self.layout.focus, max_act=self.max_act, interval_shares=self.interval_shares,
            act_hist_counts=self.act_hist_counts, logit_hist_counts=self.logit_hist_counts,
            logit_hist_min=self.logit_hist_min, logit_hist_max=self.logit_hist_max,
            logit_top_ids=self.logit_ids["top"], logit_top_values=self.logit_values["top"],
            logit_bottom_ids=self.logit_ids["bottom"], logit_bottom_values=self.logit_values["bottom"],
            window_tokens=self.window_tokens, window_values=self.window_values, n_top=self.layout.n_top,
            example_focus=self.example_focus,
        )
        return PackedFeatures(0, self.frac_nonzero, self.max_act, dashboards)


def _run_dataset(sae: Sae, dataset: Dataset | None) -> Dataset:
    if dataset is not None:
        return dataset
    latest = sae.runs.select_related("dataset").order_by("-created").first()
    if latest is None:
        raise SaeDashboardImportError(f"{sae} has no run to take a dataset from; name the dataset the "
                                      "dashboards were computed on.")
    return latest.dataset


def _imported_params(layout: Layout) -> DashboardParams:
    """What the files' dashboards amount to in a computed run's terms, for the run to record."""
    return DashboardParams(
        top_k=layout.n_top, context_before=layout.focus, context_after=layout.window - layout.focus - 1,
        n_intervals=layout.n_intervals, examples_per_interval=layout.per_interval, act_hist_bins=layout.act_hist_bins,
        logit_hist_bins=layout.logit_hist_bins, logit_tokens=layout.logit_tokens, neighbours=layout.neighbours,
    )


def sae_dashboards_import(*, sae: Sae, files: Sequence[Path], dataset: Dataset | None = None) -> DashboardRun:
    """Read and check every file first, then write one run with all its features and publish it, atomically.

    dataset: what the run records as its dataset; by default the one of the SAE's latest run.
    """
    features = saedashboard_files_read(sae=sae, files=files)
    layout = _layout(features)
    arrays = _Arrays(layout, sae.d_sae)
    for feature in features:
        arrays.fill(feature)
    packed = arrays.pack()
    run_dataset = _run_dataset(sae, dataset)
    first = features[0]
    with transaction.atomic():
        # Locked before the run's row refers to it, as publishing locks it: two imports then wait for each other
        # instead of deadlocking on the lock each one's new run takes.
        locked = Sae.objects.select_for_update().get(pk=sae.pk)
        run = DashboardRun.objects.create(
            sae=locked, dataset=run_dataset, n_sequences=first.n_prompts, params=_imported_params(layout).as_json(),
            tokens_total=first.n_prompts * first.n_tokens_in_prompt, device=IMPORTED_DEVICE, started=timezone.now(),
        )
        run_features_publish(run=run, features=[packed], phase=IMPORTED_PHASE)
    run.refresh_from_db()
    return run
