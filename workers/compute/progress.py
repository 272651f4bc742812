"""How a long computation says how far it is: one callback type, and a throttle for writers that are slow."""

import time
from collections.abc import Callable

Progress = Callable[[str, int, int], None]  # (phase, done, total)


def progress_ignore(phase: str, done: int, total: int) -> None:
    return None


def progress_throttled(write: Progress, *, seconds: float) -> Progress:
    """Pass progress on to write at most every `seconds`, and always when a phase is done: a database
    write per batch would cost more than the batch."""
    last = 0.0

    def report(phase: str, done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done < total and now - last < seconds:
            return
        last = now
        write(phase, done, total)

    return report
