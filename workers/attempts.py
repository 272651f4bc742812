"""One retry policy for every step of a dashboard run: what a failed try records, and when to stop trying.

A step's body counts its tries against settings.ATLAS_TASK_ATTEMPTS itself, since a task delivered again after
its worker died is a try that Celery does not count. Before the last try a failure raises RetryLater, which the
Celery task turns into a retry after ATLAS_TASK_RETRY_SECONDS (workers.tasks); on the last one it is recorded
for good and the task ends normally. A bad SAE file fails at once: trying again cannot help.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from workers.compute.sae_errors import SaeFormatError

logger = logging.getLogger(__name__)


class RetryLater(Exception):
    """A try failed in a way that may pass; the task should run again."""


@dataclass(frozen=True)
class Attempt:
    """One try at a step, and what its failure means."""

    number: int
    step: str  # names the step in the final message, e.g. "shard 2 of 2 (sequences 8-11)"
    requeue: Callable[[str], None]  # records a failed try that another will follow
    fail: Callable[[str], None]  # records that the step failed for good


def attempt_run(work: Callable[[], None], attempt: Attempt) -> bool:
    """Run work; True if it finished. A failure is recorded through attempt (RetryLater is raised unless this
    was the last try), and False returned."""
    try:
        work()
    except SaeFormatError as error:
        attempt.fail(str(error))
        return False
    except Exception as error:  # any failure must end as a state a user can see, not as a dead task
        logger.exception("%s failed (attempt %s)", attempt.step, attempt.number)
        message = f"{type(error).__name__}: {error}"
        if attempt.number < settings.ATLAS_TASK_ATTEMPTS:
            attempt.requeue(message)
            raise RetryLater(message) from error
        attempt.fail(f"{attempt.step} failed after {attempt.number} attempts: {message}")
        return False
    return True
