"""Server flags and per-job limits: ``server_flag`` (a ``--flag VALUE`` after ``--`` on ``streamlit run``, else an
environment variable, else a default) and ``Limits`` (wall time, memory, pool size, queue bounds).

Imports neither streamlit nor torch: the worker processes import this package to find their entry point.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any, Callable


class JobRefused(Exception):
    """A job the runner will not take (unknown kind, queue full, too many for one session): one line."""


# ----------------------------------------------------------------------------------------------- server flags
def server_flag(flag: str, env: str | None = None, default: Any = None, cast: Callable[[str], Any] = str,
                argv: list[str] | None = None) -> Any:
    """A server option: ``--flag VALUE`` (or ``--flag=VALUE``) among the script's arguments (what follows ``--`` on
    ``streamlit run``), else the environment variable ``env``, else ``default``. A bad value raises JobRefused."""
    args = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(flag, dest="value", default=None)
    try:
        value = parser.parse_known_args(args)[0].value
    except SystemExit:  # "--flag" with no value
        raise JobRefused(f"{flag}: expected a value") from None
    if value is None and env:
        value = os.environ.get(env)
    if value is None or value == "":
        return default
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise JobRefused(f"{flag}: {value!r} is not a valid {getattr(cast, '__name__', 'value')}") from None


def _machine_memory_mb() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 4096.0


@dataclass
class Limits:
    """Per-job limits and pool size; ``from_server_flags`` reads the server's flags and environment."""

    time_s: float = 300.0
    memory_mb: int = 2048
    workers: int = 1
    per_session: int = 2  # jobs one session may have queued or running at once
    max_queue: int = 200  # queued jobs in the whole server
    keep_finished: int = 256  # finished jobs kept (their results are reused by identical submissions)
    keep_result_mb: int = 256  # ...and at most this much of their results (a MiniLM bundle is ~90 MB)
    warm: bool = True  # workers import the library and the sample models before their first job
    nice: int = 10  # workers' CPU priority below the page server's

    @staticmethod
    def default_workers(memory_mb: int) -> int:
        """One worker per core but one (the page server's), and no more than the machine's memory fits."""
        cores = os.cpu_count() or 1
        by_memory = int(_machine_memory_mb() // (memory_mb + 600))  # ~600 MB: a worker's own torch + data
        return max(1, min(cores - 1, by_memory, 8))

    @classmethod
    def from_server_flags(cls, argv: list[str] | None = None) -> "Limits":
        time_s = server_flag("--job-time-limit", "COMPRESSION_LAB_JOB_TIME_LIMIT", 300.0, float, argv)
        memory_mb = server_flag("--job-memory-limit", "COMPRESSION_LAB_JOB_MEMORY_MB", 2048, int, argv)
        if time_s <= 0 or memory_mb < 64:
            raise JobRefused("--job-time-limit must be > 0 seconds and --job-memory-limit at least 64 MB")
        workers = server_flag("--job-workers", "COMPRESSION_LAB_JOB_WORKERS", None, int, argv)
        return cls(time_s=time_s, memory_mb=memory_mb,
                   workers=max(1, workers) if workers else cls.default_workers(memory_mb))
