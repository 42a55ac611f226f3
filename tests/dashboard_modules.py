"""Import a dashboard module the way the pages see it (``dashboard/`` on ``sys.path``, as the app puts it), without
leaving that folder on the test process's path."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

DASHBOARD = str(Path(__file__).resolve().parent.parent / "dashboard")


def dashboard_module(name: str) -> ModuleType:
    """``dashboard/<name>`` imported as the pages import it (``"state.previews"``, ``"server"``)."""
    sys.path.insert(0, DASHBOARD)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(DASHBOARD)
