"""Import a dashboard module the way the pages see it (``dashboard/`` on ``sys.path``, as the app puts it), without
leaving that folder on the test process's path; and press Explore's "Time before vs after" in an AppTest, waiting for
its job as the page's poller does in a browser."""

from __future__ import annotations

import importlib
import sys
import time
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


def latency_running(at) -> bool:
    """Whether the Explore page in ``at`` (an AppTest) waits on a ``latency`` job (the job panel's ``_jobs``)."""
    return any(k.startswith("latency:") for k in (at.session_state.get("_jobs") or {}))


def time_latency(at, timeout: float = 240.0):
    """Press "Time before vs after" and rerun the page until its ``latency`` job (a worker process) has finished and
    the page has taken its result (what the page's poller does in a browser, about every half second)."""
    at.button(key="b_latency").click().run()
    deadline = time.monotonic() + timeout
    while latency_running(at) and time.monotonic() < deadline:
        assert not at.exception, at.exception
        time.sleep(0.5)
        at.run()
    assert not latency_running(at), "the latency job did not finish in time"
    return at
