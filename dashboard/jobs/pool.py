"""Heavy dashboard work (training, QAT, distillation, lottery tickets, sensitivity, search, latency) as jobs in a pool
of worker processes, so one student's job never runs under the page server's GIL.

    runner().submit(kind, payload, session_id) -> job id
    runner().status(job_id) -> {state, queue_position, progress, message, result | error, ...}
    runner().cancel(job_id, session_id)

Workers are ``spawn``-ed processes (no forked torch state), sized to the machine (one core left to the page server,
and no more workers than the memory limit allows), started lazily, each running one job at a time at a lower CPU
priority (``nice``) than the page server. A worker rebuilds the workload from its reference string
(``compression_core.resolve_workload``, cached per worker) and runs the library (``apply_recipe``, ``sensitivity``,
``fit_budget``, ``search``, ``advise``, ``latency``); results come back as plain data (a compressed model as a bundle,
the library's own file format, rebuilt in the server with ``jobs.recipe_result``).

Limits per job: wall time (a watchdog in the server kills the worker) and memory (``RLIMIT_AS`` set in the worker
before each job, plus the watchdog on the worker's RSS). A job that hits one ends with ONE line naming the limit and
the server flag that changes it; the worker is replaced and the server lives on. Cancel removes a queued job or kills
its running worker. Each worker talks to the server over its own pipe (not one shared queue): killing a worker in the
middle of a message can then never leave a lock held that the other workers need.

Server flags (after ``--`` on ``streamlit run dashboard/app.py -- ...``, or environment variables):
``--job-time-limit SECONDS`` (COMPRESSION_LAB_JOB_TIME_LIMIT, default 300), ``--job-memory-limit MB``
(COMPRESSION_LAB_JOB_MEMORY_MB, default 2048), ``--job-workers N`` (COMPRESSION_LAB_JOB_WORKERS, default: cores - 1).

This module imports neither streamlit nor torch at import time: the workers import it to find their entry point.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from multiprocessing import connection
from typing import Any, Callable

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "queued", "running", "done", "error", "cancelled"
FINISHED = (DONE, ERROR, CANCELLED)

# kind -> "module:function"; the function is called in a worker as fn(payload, progress) -> picklable result.
KINDS: dict[str, str] = {
    "recipe": f"{__name__}:run_recipe",  # training steps: finetune, QAT, distillation, lottery tickets, ...
    "sensitivity": f"{__name__}:run_sensitivity",
    "fit": f"{__name__}:run_fit",
    "search": f"{__name__}:run_search",
    "advise": f"{__name__}:run_advise",
    "latency": f"{__name__}:run_latency",
    "sleep": f"{__name__}:run_sleep",  # diagnostics: check the limits and the queue on a server
    "allocate": f"{__name__}:run_allocate",
}


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


# ----------------------------------------------------------------------------------------------- records
@dataclass
class Job:
    id: str
    kind: str
    payload: Any
    sessions: set[str]
    dedupe: str | None
    submitted: float = field(default_factory=time.monotonic)
    state: str = QUEUED
    progress: float = 0.0
    message: str = "waiting for a worker"
    result: Any = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    size: int = 0  # bytes of the result, roughly (bundles dominate)


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
                env={**os.environ, "OMP_NUM_THREADS": "1", "COMPRESSION_LAB_JOB_WORKER": str(index)})
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


def _result_size(result: Any, depth: int = 0) -> int:
    """Roughly the bytes a result holds: its bytes values (bundles) and a little per other leaf."""
    if isinstance(result, (bytes, bytearray)):
        return len(result)
    if depth > 4:
        return 1024
    if isinstance(result, dict):
        return sum(_result_size(v, depth + 1) for v in result.values())
    if isinstance(result, (list, tuple)):
        return sum(_result_size(v, depth + 1) for v in result[:1000])
    return 64


def _dedupe_key(kind: str, payload: Any) -> str | None:
    """Identical jobs share one run (results are deterministic); payloads that are not JSON are never shared."""
    try:
        text = json.dumps([kind, payload], sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------------------------- the runner
class JobRunner:
    """A queue of jobs served by a pool of worker processes (see the module docstring)."""

    RECYCLE_AFTER = 50  # jobs per worker before it is replaced (bounds slow leaks in long workshops)

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits.from_server_flags()
        self.lock = threading.RLock()
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.by_key: dict[str, str] = {}
        self.workers: list[_Worker] = []
        self._ids = itertools.count(1)
        self._prefix = os.urandom(3).hex()
        self._wake_r, self._wake_w = connection.Pipe(duplex=False)
        self.failed_starts = 0  # workers that died before they were ready, in a row
        self.broken: str | None = None  # one line while workers cannot start at all
        self.broken_until = 0.0
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._worker_index = itertools.count(1)

    # ------------------------------------------------------------------ public API (called from page threads)
    def submit(self, kind: str, payload: Any, session_id: str) -> str:
        """Queue a job (or join an identical queued, running or finished one); returns its id."""
        if kind not in KINDS:
            raise JobRefused(f"job kind {kind!r} is unknown; known kinds: {', '.join(sorted(KINDS))}")
        key = _dedupe_key(kind, payload)
        with self.lock:
            if self._stopping:
                raise JobRefused("jobs: the server is shutting down")
            if self.broken and time.monotonic() < self.broken_until:
                raise JobRefused(self.broken)
            same = self.jobs.get(self.by_key.get(key, "")) if key else None
            if same is not None and same.state in (QUEUED, RUNNING, DONE):
                same.sessions.add(session_id)
                self.jobs.move_to_end(same.id)
                return same.id
            mine = sum(1 for j in self.jobs.values() if j.state in (QUEUED, RUNNING) and session_id in j.sessions)
            if mine >= self.limits.per_session:
                raise JobRefused(f"jobs: you already have {mine} jobs waiting or running (at most "
                                 f"{self.limits.per_session} per student); wait for one or cancel it")
            if sum(1 for j in self.jobs.values() if j.state == QUEUED) >= self.limits.max_queue:
                raise JobRefused(f"jobs: the server's queue is full ({self.limits.max_queue} jobs); try again in a "
                                 "minute")
            job = Job(id=f"{self._prefix}-{next(self._ids)}", kind=kind, payload=payload, sessions={session_id},
                      dedupe=key)
            self.jobs[job.id] = job
            if key:
                self.by_key[key] = job.id
            self._forget_old()
        self._ensure_started()
        self._wake()
        return job.id

    def status(self, job_id: str) -> dict:
        """{id, kind, state, queue_position (1 = next; 0 when not queued), progress 0..1, message, elapsed_s,
        result (done) | error (one line)}."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None:
                return {"id": job_id, "kind": None, "state": "unknown", "queue_position": 0, "progress": 0.0,
                        "message": "", "elapsed_s": 0.0,
                        "error": f"job {job_id}: not known to this server (it restarted, or the job was cleared)"}
            out = {"id": job.id, "kind": job.kind, "state": job.state, "queue_position": 0,
                   "progress": job.progress, "message": job.message,
                   "elapsed_s": round((job.finished or time.monotonic()) - (job.started or job.submitted), 2)}
            if job.state == QUEUED:
                order = self._queue_order()
                out["queue_position"] = order.index(job) + 1
                out["message"] = f"waiting: position {out['queue_position']} in the queue"
            if job.state == DONE:
                out["result"] = job.result
            elif job.state in (ERROR, CANCELLED):
                out["error"] = job.error
            return out

    def cancel(self, job_id: str, session_id: str | None = None) -> bool:
        """Cancel a queued or running job (for ``session_id``: a job shared with other sessions keeps running for
        them). True if the job was queued or running."""
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or job.state in FINISHED:
                return False
            if session_id is not None:
                job.sessions.discard(session_id)
                if job.sessions:
                    return True
            self._finish(job, CANCELLED, error=f"{job.kind} job cancelled")
            for w in self.workers:
                if w.job is job:
                    w.job = None
                    self._replace(w)
        self._wake()
        return True

    def session_jobs(self, session_id: str) -> list[dict]:
        with self.lock:
            ids = [j.id for j in self.jobs.values() if session_id in j.sessions]
        return [self.status(i) for i in ids]

    def summary(self) -> dict:
        """Counts for a status line: queued, running, workers."""
        with self.lock:
            return {"queued": sum(j.state == QUEUED for j in self.jobs.values()),
                    "running": sum(j.state == RUNNING for j in self.jobs.values()),
                    "workers": len(self.workers), "limits": self.limits.__dict__.copy()}

    def wait(self, job_id: str, timeout: float = 60.0, poll: float = 0.05) -> dict:
        """Block until the job is finished (tests, scripts); returns its status."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.status(job_id)
            if s["state"] in FINISHED or s["state"] == "unknown" or time.monotonic() > deadline:
                return s
            time.sleep(poll)

    def shutdown(self) -> None:
        with self.lock:
            self._stopping = True
            for job in self.jobs.values():
                if job.state in (QUEUED, RUNNING):
                    self._finish(job, CANCELLED, error=f"{job.kind} job cancelled: the server is stopping")
            workers, self.workers = self.workers, []
        self._wake()
        for w in workers:
            try:
                w.conn.send(("stop",))
            except (OSError, ValueError):
                pass
        for w in workers:
            try:
                w.proc.wait(1)
            except subprocess.TimeoutExpired:
                pass
            w.kill()
        if self._thread is not None:
            self._thread.join(2)

    # ------------------------------------------------------------------ internals
    def _wake(self) -> None:
        try:
            self._wake_w.send_bytes(b"!")
        except (OSError, ValueError):
            pass

    def _ensure_started(self) -> None:
        with self.lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="compression-lab-jobs", daemon=True)
                self._thread.start()
            while (len(self.workers) < self.limits.workers and not self._stopping
                   and time.monotonic() >= self.broken_until):
                self.workers.append(_Worker(self.limits, next(self._worker_index)))

    def _replace(self, w: _Worker) -> None:
        """Kill ``w`` and start a fresh worker in its place (called with the lock held)."""
        w.kill()
        if w in self.workers:
            i = self.workers.index(w)
            if self._stopping or time.monotonic() < self.broken_until:
                self.workers.pop(i)  # _ensure_started fills the pool again later
            else:
                self.workers[i] = _Worker(self.limits, next(self._worker_index))

    def _queue_order(self) -> list[Job]:
        """Queued jobs in the order they will start: first those whose sessions have nothing running, then FIFO."""
        busy = set()
        for j in self.jobs.values():
            if j.state == RUNNING:
                busy |= j.sessions
        queued = [j for j in self.jobs.values() if j.state == QUEUED]
        queued.sort(key=lambda j: (bool(j.sessions & busy), j.submitted))
        return queued

    def _finish(self, job: Job, state: str, result: Any = None, error: str | None = None) -> None:
        job.state, job.result, job.error = state, result, error
        job.finished = time.monotonic()
        if state == DONE:
            job.progress, job.message = 1.0, "done"
            job.size = _result_size(result)
        else:
            job.message = error or state
        if state != DONE and job.dedupe and self.by_key.get(job.dedupe) == job.id:
            del self.by_key[job.dedupe]  # a failed or cancelled job is not reused; the next submission runs again

    def _forget_old(self) -> None:
        """Drop the oldest finished jobs beyond ``keep_finished`` or ``keep_result_mb`` of results."""
        finished = [j for j in self.jobs.values() if j.state in FINISHED]
        total = sum(j.size for j in finished)
        for i, j in enumerate(finished):
            if len(finished) - i <= self.limits.keep_finished and total <= self.limits.keep_result_mb * 2**20:
                break
            total -= j.size
            del self.jobs[j.id]
            if j.dedupe and self.by_key.get(j.dedupe) == j.id:
                del self.by_key[j.dedupe]

    def _loop(self) -> None:
        while True:
            with self.lock:
                if self._stopping:
                    return
                waitables: list = [self._wake_r]
                for w in self.workers:
                    waitables.append(w.conn)
            try:
                ready = connection.wait(waitables, timeout=0.25)
            except (OSError, ValueError):  # a pipe closed under us: the next round sees the new worker list
                ready = []
            with self.lock:
                if self._stopping:
                    return
                if self._wake_r in ready:
                    try:
                        while self._wake_r.poll():
                            self._wake_r.recv_bytes()
                    except (OSError, EOFError):
                        pass
                for w in list(self.workers):
                    if w.conn in ready:
                        self._drain(w)
                self._watch()
                self._dispatch()

    def _drain(self, w: _Worker) -> None:
        """Read every message a worker sent (with the lock held)."""
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                self._handle(w, msg)
        except (EOFError, OSError):
            pass  # the worker died: _watch sees its sentinel

    def _handle(self, w: _Worker, msg: tuple) -> None:
        what = msg[0]
        if what == "ready":
            w.ready = True
            w.base_rss_mb = _rss_mb(w.proc.pid)
            self.failed_starts, self.broken = 0, None
            return
        job = w.job
        if job is None or msg[1] != job.id:
            return  # a message about a job that was cancelled meanwhile
        if what == "progress":
            job.progress = max(0.0, min(1.0, float(msg[2])))
            job.message = str(msg[3])[:200]
        elif what == "done":
            w.job = None
            w.jobs_done += 1
            self._finish(job, DONE, result=msg[2])
            self._forget_old()
            if w.jobs_done >= self.RECYCLE_AFTER:
                self._replace(w)
        elif what == "error":
            w.job = None
            w.jobs_done += 1
            reason, line = msg[2], msg[3]
            if reason == "memory":
                line = self._limit_line(job, "memory")
            self._finish(job, ERROR, error=line)
            if reason == "memory" or w.jobs_done >= self.RECYCLE_AFTER:
                self._replace(w)  # after a MemoryError the worker's heap is not to be trusted

    def _limit_line(self, job: Job, which: str, seconds: float | None = None) -> str:
        if which == "time":
            return (f"{job.kind} job stopped after {seconds:.0f} s: it hit the per-job time limit "
                    f"({self.limits.time_s:g} s); start the server with `-- --job-time-limit SECONDS` "
                    "(or COMPRESSION_LAB_JOB_TIME_LIMIT) to change it")
        return (f"{job.kind} job stopped: it needed more than the per-job memory limit "
                f"({self.limits.memory_mb:,} MB); start the server with `-- --job-memory-limit MB` "
                "(or COMPRESSION_LAB_JOB_MEMORY_MB) to change it")

    def _watch(self) -> None:
        """Time and memory watchdog, and dead workers (with the lock held)."""
        now = time.monotonic()
        for w in list(self.workers):
            job = w.job
            if not w.alive():
                code = w.proc.returncode
                how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                if job is not None:
                    w.job = None
                    self._finish(job, ERROR, error=f"{job.kind} job failed: its worker process ended unexpectedly "
                                                   f"({how}); the server is fine, try again")
                if not w.ready:
                    self.failed_starts += 1
                    if self.failed_starts >= 3:  # do not spin: fail the queue in one line, retry in 30 s
                        self.broken = (f"jobs: worker processes cannot start ({how}; see the server log); "
                                       "heavy work is unavailable until that is fixed")
                        self.broken_until = now + 30
                        for j in self.jobs.values():
                            if j.state == QUEUED:
                                self._finish(j, ERROR, error=self.broken)
                self._replace(w)
                continue
            if job is None:
                continue
            elapsed = now - (job.started or now)
            if elapsed > self.limits.time_s:
                w.job = None
                self._finish(job, ERROR, error=self._limit_line(job, "time", elapsed))
                self._replace(w)
                continue
            rss = _rss_mb(w.proc.pid)
            if rss and rss - w.base_rss_mb > self.limits.memory_mb:
                w.job = None
                self._finish(job, ERROR, error=self._limit_line(job, "memory"))
                self._replace(w)

    def _dispatch(self) -> None:
        if not self.workers and not self._stopping and time.monotonic() >= self.broken_until:
            while len(self.workers) < self.limits.workers:
                self.workers.append(_Worker(self.limits, next(self._worker_index)))
        idle = [w for w in self.workers if w.ready and w.job is None and w.alive()]
        if not idle:
            return
        for job in self._queue_order():
            if not idle:
                break
            w = idle.pop(0)
            job.state, job.started, job.message = RUNNING, time.monotonic(), "starting"
            w.job = job
            try:
                w.conn.send(("job", job.id, KINDS[job.kind], job.payload, self.limits.memory_mb))
            except (OSError, ValueError) as e:
                w.job = None
                self._finish(job, ERROR, error=f"{job.kind} job failed: could not reach a worker ({e}); try again")
                self._replace(w)
            except Exception as e:  # the payload cannot be pickled: the caller's mistake, one line
                w.job = None
                self._finish(job, ERROR, error=f"{job.kind} job failed: its input cannot be sent to a worker "
                                               f"({type(e).__name__}: {str(e)[:200]})")


_RUNNER: JobRunner | None = None
_RUNNER_LOCK = threading.Lock()


def runner() -> JobRunner:
    """The server's one job runner (created on first use, limits from the server flags)."""
    global _RUNNER
    with _RUNNER_LOCK:
        if _RUNNER is None:
            _RUNNER = JobRunner()
            import atexit

            atexit.register(_RUNNER.shutdown)
        return _RUNNER


# ----------------------------------------------------------------------------------------------- the worker
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


# ----------------------------------------------------------------------------------------------- job kinds
def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def run_recipe(payload: dict, progress) -> dict:
    """Apply a recipe (any steps, training included) and return its measured numbers and the model as a bundle."""
    _threads()
    from compression_core.bundle import bundle_bytes
    from compression_core.recipe import apply_recipe, load_recipe

    recipe = load_recipe(payload["recipe"])
    t0 = time.perf_counter()
    r = apply_recipe(recipe, progress=progress, with_latency=False, measure_before=False)
    seconds = time.perf_counter() - t0
    return {"recipe": payload["recipe"], "after": r.after.model_dump() if r.after is not None else None,
            "steps": [s.to_json_dict() for s in r.steps], "seconds": seconds,
            "bundle": bundle_bytes(r.recipe, r.model)}


def recipe_result(result: dict):
    """The ``compression_core.recipe.RecipeResult`` of a finished ``recipe`` job, its model rebuilt in this process
    from the bundle (structure replayed, stored weights loaded: nothing trains)."""
    import tempfile

    from compression_core import ModelStats
    from compression_core.bundle import load_bundle
    from compression_core.recipe import RecipeResult, StepReport, load_recipe

    fd, path = tempfile.mkstemp(suffix=".bundle.pt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(result["bundle"])
        _, model = load_bundle(path)
    finally:
        os.unlink(path)
    after = ModelStats.model_validate(result["after"]) if result.get("after") is not None else None
    steps = [StepReport(s["index"], s["kind"], list(s["touched"]), s["seconds"], s.get("notes", ""))
             for s in result.get("steps", [])]
    return RecipeResult(load_recipe(result["recipe"]), model, None, after, steps)


def run_sensitivity(payload: dict, progress) -> dict:
    """``compression_core.sensitivity`` of a workload reference: {model, technique, include_classifier, levels}."""
    _threads()
    from compression_core import resolve_workload
    from compression_core.sensitivity import sensitivity

    wl = resolve_workload(payload["model"])
    kw = {k: payload[k] for k in ("levels", "include_classifier", "heads") if k in payload}
    return sensitivity(wl.model, wl, payload.get("technique", "prune"), name=wl.name, progress=progress,
                       **kw).to_json_dict()


def run_fit(payload: dict, progress) -> dict:
    """``fit_budget`` of a workload reference to ``payload['spec']``; the fit and its explicit recipe (YAML)."""
    _threads()
    from compression_core import resolve_workload
    from compression_core.budget import fit_budget, fitted_recipe
    from compression_core.recipe import recipe_to_yaml

    wl = resolve_workload(payload["model"])
    progress(0.1, "fitting")
    f = fit_budget(wl.model, wl, payload["spec"])
    return {"fit": f.model_dump(), "recipe": recipe_to_yaml(fitted_recipe(payload["model"], f))}


def run_search(payload: dict, progress) -> dict:
    """``compression_core.search.search`` run locally in the worker: {model, trials, ...search keywords}."""
    _threads()
    from compression_core.search import search

    kw = dict(payload)
    model = kw.pop("model")
    kw["executor"] = "local"  # one worker = one core; a Ray cluster is the CLI's business
    return search(model, progress=progress, **kw).to_json_dict()


def run_advise(payload: dict, progress) -> dict:
    _threads()
    from compression_core.advise import advise

    progress(0.05, "quantizing and measuring each candidate")
    return advise(payload["model"], max_drop_pt=float(payload.get("max_drop", 1.0))).to_json_dict()


def run_latency(payload: dict, progress) -> dict:
    """Baseline vs compressed latency timed together, interleaved (``compression_core.timing.compare_latency``, the
    page's own verdicts): {model, recipe, bundle (from a recipe job or ``bundle_bytes``; else the recipe is applied
    here), batch, threads, rounds}."""
    _threads()
    from compression_core import inputs as I
    from compression_core import resolve_workload
    from compression_core.timing import compare_latency

    wl = resolve_workload(payload["model"])
    progress(0.05, "rebuilding the compressed model")
    if payload.get("bundle"):
        after = recipe_result({"recipe": payload["recipe"], "bundle": payload["bundle"]}).model
    else:
        from compression_core.recipe import apply_recipe

        after = apply_recipe(payload["recipe"], with_latency=False, measure_before=False, measure_after=False).model
    progress(0.2, "timing before and after, alternately")
    example = I.head(wl.test.x, int(payload.get("batch", 1)))
    c = compare_latency(wl.model, after, example, threads=int(payload.get("threads", 1)),
                        rounds=int(payload.get("rounds", 15)))
    return c.to_json_dict()


def run_sleep(payload: dict, progress) -> dict:
    """Diagnostics: sleep ``seconds`` in steps, reporting progress (checks queue, cancel and the time limit)."""
    seconds = float(payload.get("seconds", 1.0))
    steps = max(1, int(seconds / 0.05))
    for i in range(steps):
        time.sleep(seconds / steps)
        progress((i + 1) / steps, f"slept {(i + 1) * seconds / steps:.2f} s")
    return {"slept": seconds, "pid": os.getpid()}


def run_allocate(payload: dict, progress) -> dict:
    """Diagnostics: allocate ``mb`` megabytes and touch them (checks the memory limit)."""
    mb = int(payload.get("mb", 10))
    blocks = []
    for i in range(mb):
        blocks.append(b"\x01" * 2**20)  # written, so every page is really resident
        if i % 64 == 0:
            progress(i / max(mb, 1), f"allocated {i} MB")
    return {"allocated_mb": len(blocks), "pid": os.getpid()}


# ----------------------------------------------------------------------------------------------- the page's panel
def job_panel(kind: str, payload: Any, key: str, session_id: str, label: str | None = None) -> Any:
    """Run ``kind`` as a job from a page (Streamlit): with ``label``, a button starts it, else it starts at once (a
    sweep the page needs); meanwhile its queue position, progress and a Cancel button show in a fragment refreshed
    every second. Returns the result once done (on every run after that, until ``key`` changes), else None. A
    failure, a limit or a cancel is one line (and the button is offered again)."""
    import streamlit as st

    ss = st.session_state
    running: dict = ss.setdefault("_jobs", {})  # key -> job id
    results: dict = ss.setdefault("_job_results", {})  # key -> result (the latest few)
    lines: dict = ss.setdefault("_job_lines", {})  # key -> the last job's one-line error
    if key in results:
        return results[key]
    job_id = running.get(key)
    if job_id is not None:
        s = runner().status(job_id)
        if s["state"] == DONE:
            del running[key]
            lines.pop(key, None)
            results[key] = s["result"]
            while len(results) > 8:  # a session keeps only its latest few results
                results.pop(next(iter(results)))
            return s["result"]
        if s["state"] in (ERROR, CANCELLED, "unknown"):
            del running[key]
            lines[key] = s.get("error") or s["state"]
        else:
            _job_fragment(job_id, session_id)
            return None
    start = st.button(label, type="primary", key=f"b_job_{kind}" if kind != "recipe" else "b_run") if label \
        else key not in lines  # started at once, unless it just failed (then: the line, and a retry button)
    if not label and key in lines:
        start = st.button("Try again", key=f"b_retry_{kind}")
    if start:
        try:
            running[key] = runner().submit(kind, payload, session_id)
            lines.pop(key, None)
        except JobRefused as e:
            lines[key] = str(e)
        else:
            _job_fragment(running[key], session_id)
            return None
    if key in lines:
        st.error(lines[key])
    return None


def training_panel(recipe: dict, key: str, session_id: str, adopt: Callable[[dict], None],
                   label: str = "Run training steps") -> bool:
    """The Explore page's training control: ``job_panel`` for a recipe with a button; when the job is done,
    ``adopt(result)`` takes the result (once, e.g. into the page's result cache). True once adopted."""
    import streamlit as st

    result = job_panel("recipe", {"recipe": recipe}, key, session_id, label)
    if result is None:
        return False
    st.session_state["_job_results"].pop(key, None)  # adopted: the page's own cache holds it from now on
    try:
        adopt(result)
    except Exception as e:  # the result cannot be rebuilt here: one line, the button comes back
        st.session_state["_job_lines"][key] = f"recipe job finished but its result could not be loaded ({_one_line(e)})"
        st.error(st.session_state["_job_lines"][key])
        return False
    return True


def _job_fragment(job_id: str, session_id: str) -> None:
    import streamlit as st

    @st.fragment(run_every=1.0)
    def panel() -> None:
        s = runner().status(job_id)
        if s["state"] not in (QUEUED, RUNNING):
            st.rerun()  # the whole page takes the result (or shows the one-line error)
        if s["state"] == QUEUED:
            busy = runner().summary()
            text = (f"waiting for a worker: position {s['queue_position']} in the queue "
                    f"({busy['running']} running on {busy['workers']} worker process(es))")
        else:
            text = f"running ({s['elapsed_s']:.0f} s): {s['message']}"
        st.progress(float(s["progress"]), text=text)
        if st.button("Cancel", key="b_cancel"):
            runner().cancel(job_id, session_id)
            st.rerun()

    panel()
