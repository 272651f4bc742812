"""WSGI entry point (gunicorn atlas.wsgi, with platform/ on the Python path)."""

import gc
import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlas.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.urls import get_resolver  # noqa: E402

from atlas.embedded import local_prepare  # noqa: E402

local_prepare()
application = get_wsgi_application()
# Import every view now rather than on the first request, then move all of it out of the garbage collector's sight:
# full collections walking every long-lived object of the process were pauses that set the API's p99.
get_resolver().url_patterns  # noqa: B018
gc.freeze()
