#!/usr/bin/env python
"""Django's command-line entry point; puts platform/ and the repository root on sys.path first."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def main() -> None:
    # platform/ is a source root, not a package: a package named `platform` would shadow the stdlib.
    for path in (ROOT, ROOT / "platform"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "atlas.settings")
    from django.core.management import execute_from_command_line

    from atlas.embedded import local_prepare

    local_prepare()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
