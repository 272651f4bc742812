"""WSGI entry point (gunicorn atlas.wsgi, with platform/ on the Python path)."""

import os
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlas.settings")

from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()
