"""`celery` itself, with each model batch delayed by $ATLAS_TEST_BATCH_SLEEP seconds and each merge by
$ATLAS_TEST_MERGE_SLEEP seconds when they are set.

Tests start workers through this module so that one can be killed in the middle of a shard or a merge; with no
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


def _delay_merges(seconds: float) -> None:
    shards_check = dashboard._shards_check

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(seconds)
        return shards_check(*args, **kwargs)

    dashboard._shards_check = slow


if __name__ == "__main__":
    delay = float(os.environ.get("ATLAS_TEST_BATCH_SLEEP") or 0)
    if delay:
        _delay_batches(delay)
    merge_delay = float(os.environ.get("ATLAS_TEST_MERGE_SLEEP") or 0)
    if merge_delay:
        _delay_merges(merge_delay)
    sys.argv[0] = "celery"
    sys.exit(main())
