"""Progress passed on at most every so many seconds, and always when a phase is done."""

from types import SimpleNamespace

import pytest

from workers.compute import progress
from workers.compute.progress import progress_throttled


def test_reports_are_throttled_but_the_last_of_a_phase_always_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([10.0, 10.1, 10.2, 11.5, 11.6])
    monkeypatch.setattr(progress, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    written: list[tuple[str, int, int]] = []
    report = progress_throttled(lambda phase, done, total: written.append((phase, done, total)), seconds=1.0)
    for done in (1, 2, 3, 4):
        report("tokens", done, 5)
    report("tokens", 5, 5)
    assert written == [("tokens", 1, 5), ("tokens", 4, 5), ("tokens", 5, 5)]
