"""A worker's signs of life: the heartbeat a step writes while it computes, and the sweep that recovers dead steps.

Every ATLAS_HEARTBEAT_SECONDS a daemon thread writes the time to the row the step computes, so a worker that dies
(SIGKILL, out of memory, a lost machine) is seen within ATLAS_SHARD_STALE_SECONDS. Every worker process also runs
the recovery sweep (atlas.saes.services.runs_recover) in a thread of its own every ATLAS_RECOVERY_SECONDS: a thread,
not a task on the gpu queue, because such a task would wait behind the long shards of the very workers it checks;
the sweep locks what it takes with SKIP LOCKED, so any number of workers sweeping at once is harmless.
"""

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from celery import current_task
from django.conf import settings
from django.db import close_old_connections, connections
from django.utils import timezone

from atlas.saes.services import runs_recover

logger = logging.getLogger(__name__)


def worker_name() -> str:
    """The Celery hostname of the worker running the current task (`runs@host`); this process's host and id when
    a step runs outside a worker (commands, tests)."""
    hostname = current_task.request.hostname if current_task else None
    return hostname or f"{socket.gethostname()} (pid {os.getpid()})"


def _beat_until(beat: Callable[[], None], stopped: threading.Event, seconds: float) -> None:
    try:
        while not stopped.wait(seconds):
            try:
                beat()
            except Exception:  # a missed beat is retried at the next; the step itself must go on
                logger.exception("could not write a heartbeat; trying again in %s s", seconds)
    finally:
        connections.close_all()  # this thread's own connection


@contextmanager
def heartbeat_kept(beat: Callable[[], None]) -> Iterator[None]:
    """Call beat every ATLAS_HEARTBEAT_SECONDS from a thread with its own database connection, until the block
    ends. The step's start service writes the first heartbeat, so the thread waits one interval before its own."""
    stopped = threading.Event()
    thread = threading.Thread(target=_beat_until, args=(beat, stopped, settings.ATLAS_HEARTBEAT_SECONDS),
                              name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        # Bounded: a beat blocked on a lock must not hold up the step; the thread ends after that write.
        thread.join(timeout=settings.ATLAS_HEARTBEAT_SECONDS)


def _sweep_until(stopped: threading.Event, seconds: float) -> None:
    try:
        while not stopped.wait(seconds):
            close_old_connections()
            try:
                for message in runs_recover(now=timezone.now()):
                    logger.warning("%s", message)
            except Exception:  # the next sweep tries again; the worker's tasks must go on
                logger.exception("the recovery sweep failed; trying again in %s s", seconds)
    finally:
        connections.close_all()


_sweeper_stopped = threading.Event()


def sweeper_start() -> threading.Thread:
    """Start this process's recovery sweep, every ATLAS_RECOVERY_SECONDS until sweeper_stop()."""
    _sweeper_stopped.clear()
    thread = threading.Thread(target=_sweep_until, args=(_sweeper_stopped, settings.ATLAS_RECOVERY_SECONDS),
                              name="recovery-sweep", daemon=True)
    thread.start()
    return thread


def sweeper_stop() -> None:
    _sweeper_stopped.set()
