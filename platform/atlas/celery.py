"""The Celery application; workers start it with `celery -A atlas worker -Q gpu`."""

import os
import sys
from pathlib import Path

from celery import Celery

_ROOT = Path(__file__).resolve().parents[2]
# `celery -A atlas` finds this module through platform/ on sys.path; the tasks live in workers/ at the root.
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlas.settings")

app = Celery("atlas", include=["workers.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
