"""`celery` itself, with each model batch delayed by $ATLAS_TEST_BATCH_SLEEP seconds when it is set.

Tests start workers through this module so that one can be killed in the middle of a shard; with no
delay it is the plain Celery command line.
"""

import os
import sys
import time
from typing import Any

from celery.__main__ import main

from workers.compute import dashboard


def _delay_batches(seconds: float) -> None:
    hook_activations = dashboard._hook_activations

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return hook_activations(*args, **kwargs)

    dashboard._hook_activations = slow


if __name__ == "__main__":
    delay = float(os.environ.get("ATLAS_TEST_BATCH_SLEEP") or 0)
    if delay:
        _delay_batches(delay)
    sys.argv[0] = "celery"
    sys.exit(main())
