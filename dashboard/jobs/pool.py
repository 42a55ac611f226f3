"""The job runner: a queue of jobs served by a pool of worker processes, with per-job time and memory limits,
cancel, queue positions, progress, and identical submissions sharing one run (see the package docstring).

Not ``concurrent.futures.ProcessPoolExecutor`` or ``multiprocessing.Pool``: neither can stop ONE running task (a time
limit, a cancel, a memory watchdog) without breaking the whole pool, or cap one task's memory; ``pebble``, which can,
is not a dependency.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from multiprocessing import connection
from typing import Any

from .limits import JobRefused, Limits
from .tasks import KINDS
from .worker import _rss_mb, _Worker

QUEUED, RUNNING, DONE, ERROR, CANCELLED = "queued", "running", "done", "error", "cancelled"
FINISHED = (DONE, ERROR, CANCELLED)


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


def _check_payload(kind: str, payload: Any) -> None:
    """Every model and recipe a job names must be one of the server's listed workloads (``trust.check_job``), checked
    here, in the server process, before the job is queued: the worker resolves what it is given."""
    try:
        import trust
    except ModuleNotFoundError:  # pragma: no cover  (imported as the ``dashboard.jobs`` package)
        from dashboard import trust
    try:
        trust.check_job(kind, payload)
    except Exception as e:  # Refused, or the library's one line about a malformed recipe
        raise JobRefused(" ".join(str(e).split()) or type(e).__name__) from None


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
        # a student leaving cancels theirs: (job id, owner) -> the page sessions (Streamlit session ids) waiting on
        # it; when none of them is connected for GONE_AFTER_S, the owner's share of the job is cancelled
        self.attached: dict[tuple[str, str], set[str]] = {}
        self._gone_since: dict[tuple[str, str], float] = {}
        self._alive: Any = None  # callable(page session id) -> bool, set by the page side (panel.py)
        self._last_reap = 0.0

    # ------------------------------------------------------------------ public API (called from page threads)
    def submit(self, kind: str, payload: Any, session_id: str) -> str:
        """Queue a job (or join an identical queued, running or finished one); returns its id."""
        if kind not in KINDS:
            raise JobRefused(f"job kind {kind!r} is unknown; known kinds: {', '.join(sorted(KINDS))}")
        _check_payload(kind, payload)
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

    GONE_AFTER_S = 10.0  # a page session disconnected this long has left (a reload or a brief drop reconnects)

    def attach(self, job_id: str, session_id: str, page_session: str | None, alive=None) -> None:
        """Note that the page session ``page_session`` (a Streamlit session id) waits on ``job_id`` for
        ``session_id``; ``alive(page_session) -> bool`` says whether a page session is still connected. When every
        page session attached for that owner has gone, the owner's share of the job is cancelled (``cancel``: a job
        shared with other owners keeps running for them)."""
        if page_session is None:
            return
        with self.lock:
            if alive is not None:
                self._alive = alive
            job = self.jobs.get(job_id)
            if job is None or job.state in FINISHED:
                return
            self.attached.setdefault((job_id, session_id), set()).add(page_session)
            self._gone_since.pop((job_id, session_id), None)

    def _reap(self) -> None:
        """Cancel the jobs of owners whose page sessions have all gone (called from the loop, about once a second)."""
        now = time.monotonic()
        if now - self._last_reap < 1.0 or self._alive is None:
            return
        self._last_reap = now
        with self.lock:
            entries = list(self.attached.items())
        for (job_id, owner), pages in entries:
            with self.lock:
                job = self.jobs.get(job_id)
                if job is None or job.state in FINISHED or owner not in job.sessions:
                    self.attached.pop((job_id, owner), None)
                    self._gone_since.pop((job_id, owner), None)
                    continue
            try:
                here = any(self._alive(p) for p in list(pages))
            except Exception:  # cannot tell: assume the student is still there
                here = True
            if here:
                self._gone_since.pop((job_id, owner), None)
                continue
            since = self._gone_since.setdefault((job_id, owner), now)
            if now - since >= self.GONE_AFTER_S:
                self.cancel(job_id, owner)
                with self.lock:
                    self.attached.pop((job_id, owner), None)
                    self._gone_since.pop((job_id, owner), None)

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
            self._reap()

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
