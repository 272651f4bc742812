"""Writing a run's results: every feature by binary COPY in one transaction that also publishes the run.

Both writers of results end here: a computed run (run_results_publish, from the worker's merge) and an import
of SAEDashboard's files (atlas.features.saedashboard_import), which hands over features already packed.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from django.db import connection, transaction
from django.utils import timezone
from psycopg import sql

from atlas.features.models import Feature
from atlas.features.packing import features_pack
from atlas.features.selectors import feature_counts_from_rows
from atlas.saes.models import DashboardRun, Sae
from workers.compute.results import Examples, FeatureDashboards

# Features packed per COPY block: a few MB of rows, so memory stays flat however large the SAE.
COPY_CHUNK_FEATURES = 1024
# Feature's columns with their binary COPY types (big-endian); then "dashboard", typed by its packed layout.
_COPY_SCALARS: dict[str, np.dtype[Any]] = {
    "run": np.dtype(">i8"), "index": np.dtype(">i4"), "frac_nonzero": np.dtype(">f8"), "max_act": np.dtype(">f8"),
}
# PostgreSQL's binary COPY framing: signature, flags, header extension length; and the end marker.
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_COPY_TRAILER = b"\xff\xff"


class DashboardsShapeError(ValueError):
    """Result arrays that disagree on the number of features; nothing is written."""


@dataclass(frozen=True)
class PackedFeatures:
    """Consecutive features of a run, ready to write: feature start + i is row i."""

    start: int
    frac_nonzero: npt.NDArray[np.floating[Any]]  # [F]
    max_act: npt.NDArray[np.floating[Any]]  # [F]
    dashboards: npt.NDArray[np.void]  # [F] blobs of one layout (atlas.features.packing)

    def __len__(self) -> int:
        return len(self.dashboards)

    def part(self, start: int, stop: int) -> "PackedFeatures":
        """Rows start..stop of these, as features self.start + start on."""
        rows = slice(start, stop)
        return PackedFeatures(self.start + start, self.frac_nonzero[rows], self.max_act[rows], self.dashboards[rows])


def _slots(examples: Examples, start: int, stop: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
    """Windows of features start..stop as [F, slots, W]; empty slots have every token outside."""
    n_features, window = stop - start, examples.window_tokens.shape[-1]
    empty = (examples.seq[start:stop] < 0).reshape(n_features, -1, 1)
    tokens = np.where(empty, -1, examples.window_tokens[start:stop].reshape(n_features, -1, window))
    return tokens, examples.window_values[start:stop].reshape(n_features, -1, window)


def _interval_shares(counts: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    active = counts.sum(axis=1, keepdims=True)
    shares: npt.NDArray[np.float64] = np.divide(counts, active, out=np.zeros(counts.shape), where=active > 0)
    return shares


def _dashboards_pack(dashboards: FeatureDashboards, start: int, stop: int, focus: int) -> npt.NDArray[np.void]:
    top_tokens, top_values = _slots(dashboards.top, start, stop)
    interval_tokens, interval_values = _slots(dashboards.intervals, start, stop)
    part = slice(start, stop)
    return features_pack(
        focus=focus,
        max_act=dashboards.max_act[part],
        interval_shares=_interval_shares(dashboards.interval_counts[part]),
        act_hist_counts=dashboards.act_hist_counts[part],
        logit_hist_counts=dashboards.logit_hist_counts[part],
        logit_hist_min=dashboards.logit_hist_min[part],
        logit_hist_max=dashboards.logit_hist_max[part],
        logit_top_ids=dashboards.logit_top_ids[part],
        logit_top_values=dashboards.logit_top_values[part],
        logit_bottom_ids=dashboards.logit_bottom_ids[part],
        logit_bottom_values=dashboards.logit_bottom_values[part],
        window_tokens=np.concatenate([top_tokens, interval_tokens], axis=1),
        window_values=np.concatenate([top_values, interval_values], axis=1),
        n_top=top_tokens.shape[1],
        neighbour_ids=dashboards.neighbour_ids[part],
        neighbour_cosines=dashboards.neighbour_cosines[part],
    )


def _dashboards_packed(dashboards: FeatureDashboards, focus: int) -> Iterator[PackedFeatures]:
    """The computed features packed COPY_CHUNK_FEATURES at a time, as they are written: memory stays flat."""
    n_features = dashboards.frac_nonzero.shape[0]
    for start in range(0, n_features, COPY_CHUNK_FEATURES):
        stop = min(start + COPY_CHUNK_FEATURES, n_features)
        yield PackedFeatures(start, dashboards.frac_nonzero[start:stop], dashboards.max_act[start:stop],
                             _dashboards_pack(dashboards, start, stop, focus))


def _copy_rows(run_id: int, features: PackedFeatures) -> npt.NDArray[np.void]:
    """Features as binary COPY tuples: field count, then each field's length and big-endian value."""
    fields: dict[str, np.dtype[Any]] = {**_COPY_SCALARS, "dashboard": features.dashboards.dtype}
    framing: list[tuple[str, np.dtype[Any]]] = [("count", np.dtype(">i2"))]
    for name, kind in fields.items():
        framing += [(f"{name}_size", np.dtype(">i4")), (name, kind)]
    rows = np.empty(len(features), dtype=np.dtype(framing))
    rows["count"] = len(fields)
    for name, kind in fields.items():
        rows[f"{name}_size"] = kind.itemsize
    rows["run"] = run_id
    rows["index"] = np.arange(features.start, features.start + len(features))
    rows["frac_nonzero"] = features.frac_nonzero
    rows["max_act"] = features.max_act
    rows["dashboard"] = features.dashboards
    return rows


def _copy_chunks(features: Iterable[PackedFeatures]) -> Iterator[PackedFeatures]:
    """At most COPY_CHUNK_FEATURES rows at a time, however large the blocks handed over."""
    for block in features:
        for start in range(0, len(block), COPY_CHUNK_FEATURES):
            yield block.part(start, min(start + COPY_CHUNK_FEATURES, len(block)))


def _copy_statement() -> sql.Composed:
    columns = {field.name: sql.Identifier(field.column) for field in Feature._meta.concrete_fields if field.column}
    names = [columns[name] for name in (*_COPY_SCALARS, "dashboard")]
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(Feature._meta.db_table), sql.SQL(", ").join(names)
    )


def _features_copy(run: DashboardRun, features: Iterable[PackedFeatures]) -> int:
    """COPY every feature into the run's rows; returns how many there were."""
    n_features = 0
    with connection.cursor() as cursor, cursor.cursor.copy(_copy_statement()) as copy:
        copy.write(_COPY_SIGNATURE)
        for chunk in _copy_chunks(features):
            copy.write(_copy_rows(run.pk, chunk).tobytes())
            n_features += len(chunk)
        copy.write(_COPY_TRAILER)
    return n_features


def _dashboards_check(dashboards: FeatureDashboards) -> None:
    n_features = dashboards.frac_nonzero.shape[0]
    arrays = {name: getattr(dashboards, name) for name in vars(dashboards) if name not in {"top", "intervals"}}
    for group in ("top", "intervals"):
        arrays |= {f"{group}.{name}": array for name, array in vars(getattr(dashboards, group)).items()}
    for name, array in arrays.items():
        if isinstance(array, np.ndarray) and array.shape[0] != n_features:
            raise DashboardsShapeError(f"{name} has {array.shape[0]} features where frac_nonzero has {n_features}.")


def run_results_publish(*, run: DashboardRun, dashboards: FeatureDashboards) -> None:
    """Store every feature a run computed and make it the SAE's published run, atomically (run_features_publish)."""
    _dashboards_check(dashboards)
    run_features_publish(run=run, features=_dashboards_packed(dashboards, focus=run.dashboard_params.context_before))


def run_features_publish(*, run: DashboardRun, features: Iterable[PackedFeatures], phase: str = "done") -> None:
    """Store packed features as the run's rows and make it the SAE's published run, atomically; the previous
    published run's rows go in the same transaction.

    Readers follow sae.published_run, so they see the previous run's features or all of these; a crash
    (of this process or of Postgres) before the commit leaves no row of this run behind.
    """
    with transaction.atomic():
        sae = Sae.objects.select_for_update().get(pk=run.sae_id)
        # A redelivered task may publish a run whose rows were already committed: start clean.
        Feature.objects.filter(run=run).delete()
        n_features = _features_copy(run, features)
        previous = run_mark_published(sae=sae, run=run, n_features=n_features, phase=phase)
        if previous is not None:
            Feature.objects.filter(run_id=previous).delete()


def run_mark_published(*, sae: Sae, run: DashboardRun, n_features: int, phase: str = "done") -> int | None:
    """Make run the SAE's published run and mark it done; returns the run it replaced, whose rows must go.

    Call it inside the transaction that wrote the run's rows, with the SAE row locked.
    """
    previous = sae.published_run_id
    sae.published_run = run
    sae.save(update_fields=["published_run"])
    counts = feature_counts_from_rows(run.pk)
    DashboardRun.objects.filter(pk=run.pk).update(
        status=DashboardRun.Status.SUCCEEDED,
        finished=timezone.now(),
        phase=phase,
        error="",
        progress_done=n_features,
        progress_total=n_features,
        features_total=counts.total,
        features_dead=counts.dead,
        features_dense=counts.dense,
    )
    return previous if previous is not None and previous != run.pk else None
