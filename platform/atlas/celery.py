"""The Celery application; workers start it with `celery -A atlas worker -Q gpu`."""

import os
import sys
from pathlib import Path
from typing import Any

from celery import Celery, signals

_ROOT = Path(__file__).resolve().parents[2]
# `celery -A atlas` finds this module through platform/ on sys.path; the tasks live in workers/ at the root.
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlas.settings")

app = Celery("atlas", include=["workers.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")


@signals.celeryd_init.connect
@signals.beat_init.connect
def _local_prepare(**_: Any) -> None:
    """A worker or beat process is an entry point: it starts the embedded services settings name, as manage.py does."""
    from atlas.embedded import local_prepare

    local_prepare()
