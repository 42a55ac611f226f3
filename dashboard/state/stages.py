"""The server-side stage log: which stage of a move's numbers (estimate, preview, full test set) each session was shown,
and when (``time.monotonic``), so a test or a benchmark can check that a move's stages arrive in order and how long
each took. Bounded (the last ``MAX_ENTRIES``), process-wide, thread-safe; a stage shown again for the same move is
logged once."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import NamedTuple

ESTIMATE, PREVIEW, FULL = "estimate", "preview", "full"
STAGES = (ESTIMATE, PREVIEW, FULL)
LABELS = {ESTIMATE: "Stage: estimate", PREVIEW: "Stage: preview", FULL: "Stage: full test set"}  # the page's prefixes
MAX_ENTRIES = 5000


class Shown(NamedTuple):
    session: str
    move: str  # the move's key (the canonical recipe key)
    stage: str
    t: float  # time.monotonic() when the page rendered it


_lock = threading.Lock()
_log: deque[Shown] = deque(maxlen=MAX_ENTRIES)
_seen: set[tuple[str, str, str]] = set()


def record(session: str, move: str, stage: str) -> bool:
    """Log that ``session`` was shown ``stage`` for ``move`` (once per triple); True when this is new."""
    if stage not in STAGES:
        raise ValueError(f"stage: one of {', '.join(STAGES)}, got {stage!r}")
    with _lock:
        k = (session, move, stage)
        if k in _seen:
            return False
        if len(_log) == _log.maxlen:  # the oldest entry leaves: forget it too
            old = _log[0]
            _seen.discard((old.session, old.move, old.stage))
        _log.append(Shown(session, move, stage, time.monotonic()))
        _seen.add(k)
        return True


def entries(session: str | None = None, move: str | None = None) -> list[Shown]:
    """The log, oldest first, optionally for one session and/or one move."""
    with _lock:
        return [e for e in _log if (session is None or e.session == session) and (move is None or e.move == move)]


def clear() -> None:
    with _lock:
        _log.clear()
        _seen.clear()


__all__ = ["ESTIMATE", "FULL", "LABELS", "MAX_ENTRIES", "PREVIEW", "STAGES", "Shown", "clear", "entries", "record"]
