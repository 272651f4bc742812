"""The binary layout of one feature's dashboard in Feature.dashboard: examples, logit tables and histograms.

One blob per feature, little-endian, no padding, read with np.frombuffer (never pickle). It starts with
a fixed header that gives the sizes of everything after it, so a blob decodes without its run:

    field               type               meaning
    version             uint8              LAYOUT_VERSION
    token_bytes         uint8              2: token ids are uint16 and 0xFFFF marks "outside the sequence";
                                           4: int32 and -1 does (a run uses 2 when every id fits)
    window              uint16             W, tokens per example window
    focus               uint16             index in the window of the token the example was chosen for, in
                                           every example of a computed run (version 3 also stores it per slot)
    n_top               uint16             K, top-example slots
    n_intervals         uint16             I, activation intervals; interval i is (i*max/I, (i+1)*max/I]
    per_interval        uint16             P, example slots per interval
    logit_tokens        uint16             L, entries in each logit table
    act_hist_bins       uint16             B_act
    logit_hist_bins     uint16             B_logit
    neighbours          uint16             N, nearest features by decoder cosine (version 2 on)
    scale               float32            what example values are divided by: max_act, or 1 if it is 0
    interval_shares     float64[I]         share of the feature's active tokens in each interval
    act_hist_counts     int64[B_act]       equal-width bins over (0, max_act]
    logit_hist_counts   int64[B_logit]     equal-width bins over [logit_hist_min, logit_hist_max]
    logit_hist_range    float32[2]         logit_hist_min, logit_hist_max
    logit_top_ids       int32[L]           descending by value
    logit_top_values    float32[L]
    logit_bottom_ids    int32[L]           ascending by value
    logit_bottom_values float32[L]
    tokens              uint16|int32[S, W] S = K + I*P slots: top slots by rank, then each interval's
                                           slots by rank, interval 0 first; an empty slot is all outside
    values              float16[S, W]      activation / scale, NaN outside the sequence
    neighbour_ids       int32[N]           other features of the SAE, by decoder cosine descending
    neighbour_cosines   float32[N]
    example_focus       uint16[S]          each slot's chosen token (version 3 on): imported whole-sequence
                                           examples have it anywhere; computed runs write `focus` everywhere

Version 1 blobs, written before neighbours existed, lack the `neighbours` header field and the two arrays
after `values`; they still decode, with no neighbours. Version 2 blobs lack `example_focus`; every example of
theirs has the header's focus.
A window is a stretch of one sequence, so the positions outside it are only ever at its ends.
Dividing by the feature's maximum keeps large activations inside float16's range, and makes the top
example's peak decode to exactly max_act (1.0 * scale), so a page's numbers agree with each other.
"""

from dataclasses import astuple, dataclass, fields

import numpy as np
import numpy.typing as npt

LAYOUT_VERSION = 3
_OUTSIDE_UINT16 = 0xFFFF


class DashboardLayoutError(ValueError):
    """A stored blob that this version cannot read, or arrays that do not fit one layout."""


@dataclass(frozen=True)
class Layout:
    """The sizes a blob's header records, in header order."""

    token_bytes: int
    window: int
    focus: int
    n_top: int
    n_intervals: int
    per_interval: int
    logit_tokens: int
    act_hist_bins: int
    logit_hist_bins: int
    neighbours: int

    @property
    def slots(self) -> int:
        return self.n_top + self.n_intervals * self.per_interval

    def dtype(self, version: int = LAYOUT_VERSION) -> np.dtype[np.void]:
        slots = (self.slots, self.window)
        neighbours = [("neighbour_ids", "<i4", (self.neighbours,)), ("neighbour_cosines", "<f4", (self.neighbours,))]
        return np.dtype([
            ("header", _HEADERS[version]),
            ("scale", "<f4"),
            ("interval_shares", "<f8", (self.n_intervals,)),
            ("act_hist_counts", "<i8", (self.act_hist_bins,)),
            ("logit_hist_counts", "<i8", (self.logit_hist_bins,)),
            ("logit_hist_range", "<f4", (2,)),
            ("logit_top_ids", "<i4", (self.logit_tokens,)),
            ("logit_top_values", "<f4", (self.logit_tokens,)),
            ("logit_bottom_ids", "<i4", (self.logit_tokens,)),
            ("logit_bottom_values", "<f4", (self.logit_tokens,)),
            ("tokens", "<u2" if self.token_bytes == 2 else "<i4", slots),
            ("values", "<f2", slots),
            *(neighbours if version >= 2 else []),
            *([("example_focus", "<u2", (self.slots,))] if version >= 3 else []),
        ])


def token_bytes_for(max_token_id: int) -> int:
    """2 when every id fits in uint16 beside the outside marker, else 4."""
    return 2 if max_token_id < _OUTSIDE_UINT16 else 4


def _header(layout_fields: list[str]) -> np.dtype[np.void]:
    """The version, then the layout's fields in order: token_bytes as uint8, the rest as uint16."""
    return np.dtype([("version", "u1"), ("token_bytes", "u1"), *((name, "<u2") for name in layout_fields[1:])])


_LAYOUT_FIELDS = [field.name for field in fields(Layout)]
_HEADERS = {1: _header(_LAYOUT_FIELDS[:-1]), 2: _header(_LAYOUT_FIELDS), 3: _header(_LAYOUT_FIELDS)}


@dataclass(frozen=True)
class StoredExample:
    """One example window with the positions outside the sequence trimmed."""

    token_ids: list[int]
    values: list[float]
    focus: int

    @property
    def value(self) -> float:
        return self.values[self.focus]


@dataclass(frozen=True)
class StoredDashboard:
    top: list[StoredExample]
    intervals: list[list[StoredExample]]  # [interval][rank], interval 0 (lowest activations) first
    interval_shares: list[float]
    act_hist_counts: list[int]
    logit_hist_counts: list[int]
    logit_hist_min: float
    logit_hist_max: float
    logit_top_ids: list[int]
    logit_top_values: list[float]
    logit_bottom_ids: list[int]
    logit_bottom_values: list[float]
    neighbour_ids: list[int]
    neighbour_cosines: list[float]


def features_pack(
    *,
    focus: int,
    max_act: npt.NDArray[np.floating],  # [F]
    interval_shares: npt.NDArray[np.floating],  # [F, I]
    act_hist_counts: npt.NDArray[np.integer],  # [F, B_act]
    logit_hist_counts: npt.NDArray[np.integer],  # [F, B_logit]
    logit_hist_min: npt.NDArray[np.floating],  # [F]
    logit_hist_max: npt.NDArray[np.floating],  # [F]
    logit_top_ids: npt.NDArray[np.integer],  # [F, L]
    logit_top_values: npt.NDArray[np.floating],  # [F, L]
    logit_bottom_ids: npt.NDArray[np.integer],  # [F, L]
    logit_bottom_values: npt.NDArray[np.floating],  # [F, L]
    window_tokens: npt.NDArray[np.integer],  # [F, S, W], -1 outside the sequence and in empty slots
    window_values: npt.NDArray[np.floating],  # [F, S, W]
    n_top: int,
    neighbour_ids: npt.NDArray[np.integer] | None = None,  # [F, N]; None for results computed without them
    neighbour_cosines: npt.NDArray[np.floating] | None = None,  # [F, N]
    example_focus: npt.NDArray[np.integer] | None = None,  # [F, S]; None: every example's is `focus`
) -> npt.NDArray[np.void]:
    """Pack F features at once; row i's bytes are feature i's blob."""
    n_features, n_slots, window = window_tokens.shape
    if neighbour_ids is None or neighbour_cosines is None:
        neighbour_ids = np.zeros((n_features, 0), dtype=np.int32)
        neighbour_cosines = np.zeros((n_features, 0), dtype=np.float32)
    n_intervals = interval_shares.shape[1]
    per_interval = (n_slots - n_top) // n_intervals if n_intervals else 0
    if n_top + n_intervals * per_interval != n_slots:
        raise DashboardLayoutError(f"{n_slots} example slots are not {n_top} top slots plus {n_intervals} intervals.")
    token_bytes = token_bytes_for(int(window_tokens.max()) if window_tokens.size else -1)
    layout = Layout(token_bytes, window, focus, n_top, n_intervals, per_interval, logit_top_ids.shape[1],
                    act_hist_counts.shape[1], logit_hist_counts.shape[1], neighbour_ids.shape[1])
    rows = np.zeros(n_features, dtype=layout.dtype())
    rows["header"] = (LAYOUT_VERSION, *astuple(layout))
    scale = np.where(max_act > 0, max_act, 1.0).astype(np.float32)
    rows["scale"] = scale
    rows["interval_shares"] = interval_shares
    rows["act_hist_counts"] = act_hist_counts
    rows["logit_hist_counts"] = logit_hist_counts
    rows["logit_hist_range"] = np.stack([logit_hist_min, logit_hist_max], axis=1)
    rows["logit_top_ids"] = logit_top_ids
    rows["logit_top_values"] = logit_top_values
    rows["logit_bottom_ids"] = logit_bottom_ids
    rows["logit_bottom_values"] = logit_bottom_values
    # int32 -1 wraps to 0xFFFF when cast to uint16, which is the outside marker.
    rows["tokens"] = window_tokens.astype(np.int32).astype(rows["tokens"].dtype)
    rows["values"] = (window_values.astype(np.float32) / scale[:, None, None]).astype(np.float16)
    rows["neighbour_ids"] = neighbour_ids
    rows["neighbour_cosines"] = neighbour_cosines
    rows["example_focus"] = focus if example_focus is None else example_focus
    return rows


def _layout_read(blob: bytes) -> tuple[int, Layout]:
    """The blob's layout version and sizes; version 1 headers have no neighbours field."""
    version = blob[0] if blob else 0
    if version not in _HEADERS:
        raise DashboardLayoutError(f"Stored dashboard layout {version} is not one of {sorted(_HEADERS)}.")
    header_dtype = _HEADERS[version]
    if len(blob) < header_dtype.itemsize:
        raise DashboardLayoutError(f"A stored dashboard of {len(blob)} bytes is shorter than its header.")
    sizes = [int(value) for value in np.frombuffer(blob, dtype=header_dtype, count=1)[0].item()[1:]]
    return version, Layout(*sizes, *([0] if version == 1 else []))


def _examples(tokens: npt.NDArray[np.int32], values: npt.NDArray[np.float64],
              focus: npt.NDArray[np.integer]) -> list[StoredExample]:
    """The non-empty slots of a block of them (focus: each slot's). A window is a stretch of one sequence, so the
    positions outside it are at its ends and trimming is a slice; all slots convert to lists at once."""
    inside = tokens >= 0
    starts = inside.argmax(axis=1).tolist()
    lengths = inside.sum(axis=1).tolist()
    token_rows, value_rows, focus_rows = tokens.tolist(), values.tolist(), focus.tolist()
    return [
        StoredExample(token_rows[slot][start:start + length], value_rows[slot][start:start + length],
                      focus_rows[slot] - start)
        for slot, (start, length) in enumerate(zip(starts, lengths, strict=True))
        if length
    ]


def dashboard_unpack(blob: bytes) -> StoredDashboard:
    """One feature's blob back into lists, example windows trimmed to the sequence."""
    version, layout = _layout_read(blob)
    dtype = layout.dtype(version)
    if len(blob) != dtype.itemsize:
        raise DashboardLayoutError(f"A stored dashboard has {len(blob)} bytes; its header says {dtype.itemsize}.")
    row = np.frombuffer(blob, dtype=dtype, count=1)[0]
    tokens = row["tokens"].astype(np.int32)
    if layout.token_bytes == 2:
        tokens[tokens == _OUTSIDE_UINT16] = -1
    # float16 times float32 is exact in float64, so the top peak is exactly the scale.
    values = np.nan_to_num(row["values"].astype(np.float64) * float(row["scale"]), nan=0.0)
    top = slice(0, layout.n_top)
    interval_shape = (layout.n_intervals, layout.per_interval, layout.window)
    interval_tokens = tokens[layout.n_top:].reshape(interval_shape)
    interval_values = values[layout.n_top:].reshape(interval_shape)
    focus = row["example_focus"] if version >= 3 else np.full(layout.slots, layout.focus)
    interval_focus = focus[layout.n_top:].reshape(interval_shape[:2])
    return StoredDashboard(
        top=_examples(tokens[top], values[top], focus[top]),
        intervals=[
            _examples(interval_tokens[interval], interval_values[interval], interval_focus[interval])
            for interval in range(layout.n_intervals)
        ],
        interval_shares=row["interval_shares"].tolist(),
        act_hist_counts=row["act_hist_counts"].tolist(),
        logit_hist_counts=row["logit_hist_counts"].tolist(),
        logit_hist_min=float(row["logit_hist_range"][0]),
        logit_hist_max=float(row["logit_hist_range"][1]),
        logit_top_ids=row["logit_top_ids"].tolist(),
        logit_top_values=row["logit_top_values"].astype(np.float64).tolist(),
        logit_bottom_ids=row["logit_bottom_ids"].tolist(),
        logit_bottom_values=row["logit_bottom_values"].astype(np.float64).tolist(),
        neighbour_ids=row["neighbour_ids"].tolist() if version >= 2 else [],
        neighbour_cosines=row["neighbour_cosines"].astype(np.float64).tolist() if version >= 2 else [],
    )
