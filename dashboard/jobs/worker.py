"""One worker process: the server's handle on it (``_Worker``: start, liveness, kill, its RSS) and the process's own
loop (``worker_entry`` / ``worker_main``: receive a job, run it under ``RLIMIT_AS``, send progress and the result).

Workers are fresh interpreters (``python -c``: a spawn, not a fork, so no torch threads or locks are inherited),
each talking to the server over its own socket. Imports neither streamlit nor torch at import time.
"""

from __future__ import annotations

import importlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from multiprocessing import connection
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .limits import Limits
    from .pool import Job


class _Worker:
    """One worker process and the server's end of its socket.

    Started as a fresh interpreter (``python -c``: a spawn, not a fork, so no torch threads or locks are inherited),
    without re-running the server's ``__main__`` the way ``multiprocessing``'s spawn does; the parent's ``sys.path``
    is handed over so the worker imports this module and the library exactly as the server does."""

    def __init__(self, limits: Limits, index: int) -> None:
        ours, theirs = socket.socketpair()
        code = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); import importlib; "
                "importlib.import_module(sys.argv[2]).worker_entry(int(sys.argv[3]), sys.argv[4] == '1', "
                "int(sys.argv[5]))")
        paths = [p for p in sys.path if p]
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(paths), __name__, str(theirs.fileno()),
                 "1" if limits.warm else "0", str(limits.nice)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, close_fds=True,
                env={**os.environ, "OMP_NUM_THREADS": "1", "COMPRESSION_LAB_JOB_WORKER": str(index),
                     "COMPRESSION_LAB_POOL_WORKERS": str(limits.workers)})
        finally:
            theirs.close()
        self.conn = connection.Connection(ours.detach())
        self.started = time.monotonic()
        self.ready = False
        self.job: Job | None = None
        self.base_rss_mb = 0.0
        self.jobs_done = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)
        except Exception:  # pragma: no cover  (already gone)
            pass
        try:
            self.conn.close()
        except OSError:  # pragma: no cover
            pass


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0

def _resolve(ref: str) -> Callable:
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


def _is_memory_error(e: BaseException) -> bool:
    if isinstance(e, MemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate memory" in text or "not enough memory" in text
                                            or "DefaultCPUAllocator" in text)


def _one_line(e: BaseException) -> str:
    try:
        from compression_core import CompressionError
    except Exception:  # pragma: no cover
        CompressionError = ()  # type: ignore[assignment]
    if isinstance(e, CompressionError):
        return " ".join(str(e).split())[:500]
    first = " ".join((str(e).strip().splitlines() or [""])[0].split())[:300]
    return f"unexpected {type(e).__name__}: {first}" if first else f"unexpected {type(e).__name__}"


def worker_entry(fd: int, warm: bool = True, nice: int = 10) -> None:
    """The worker process's entry point: the server's socket is file descriptor ``fd``."""
    worker_main(connection.Connection(fd), warm, nice)


def worker_main(conn, warm: bool = True, nice: int = 10) -> None:
    """A worker's loop: receive a job, run it under the memory limit, send progress and the result back."""
    import resource
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C on the server stops the server, which stops us
    if nice:
        try:
            os.nice(nice)
        except OSError:  # pragma: no cover
            pass
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if warm:
        try:
            import torch

            torch.set_num_threads(1)
            import compression_core  # noqa: F401
            import compression_core.recipe  # noqa: F401  (registers every technique)

            compression_core.workload_names()  # loads the registered workloads (the entry-point plugins)
        except Exception:  # the job that needs them reports the problem
            pass
    send_lock = threading.Lock()
    try:
        conn.send(("ready", os.getpid()))
    except (OSError, ValueError):
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] != "job":
            return
        _, job_id, ref, payload, memory_mb = msg
        last = [0.0]

        def progress(frac: float, text: str = "", job_id: str = job_id) -> None:
            now = time.monotonic()
            if now - last[0] < 0.2 and frac < 1.0:
                return
            last[0] = now
            with send_lock:
                try:
                    conn.send(("progress", job_id, float(frac), str(text)[:200]))
                except (OSError, ValueError):
                    pass

        limit = _vm_size_bytes() + int(memory_mb) * 2**20
        memory_hit = False
        try:
            if hard == resource.RLIM_INFINITY or limit < hard:
                resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            result = _resolve(ref)(payload, progress)
            reply = ("done", job_id, result)
        except BaseException as e:  # noqa: BLE001  (a job must never take the worker's loop down silently)
            if isinstance(e, (KeyboardInterrupt, SystemExit)):
                raise
            memory_hit = _is_memory_error(e)
            reply = ("error", job_id, "memory" if memory_hit else "failed", _one_line(e))
        finally:
            try:
                resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
            except (ValueError, OSError):  # pragma: no cover
                pass
        with send_lock:
            try:
                conn.send(reply)
            except (OSError, ValueError):
                return
            except Exception as e:  # an unpicklable result: say so in one line
                conn.send(("error", job_id, "failed", f"job result cannot be sent back ({type(e).__name__})"))
        if memory_hit:
            return  # the server replaces this worker


def _vm_size_bytes() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0
