"""Where search trials and sensitivity sweeps run: in this process (``local``) or as Ray tasks (``ray``).

A task names its workload by reference (``resolve_workload(ref)``: a registered name, ``file.py:attr`` or
``package.module:attr``) and carries plain data (a recipe dict, layer names, levels): each worker rebuilds the
workload from its reference once per process, so no model is ever pickled over the wire. Results come back as plain
data, in submission order, so a caller that tells them in that order gets the same result whatever finished first.

Ray is optional: ``pip install "compression-lab[ray]"``. With ``address`` it connects to an existing cluster
(``ray start --head`` on the head node; ``host:port``, ``ray://host:port`` or ``auto``); without, it starts a local
runtime bound to 127.0.0.1 with ``workers`` CPUs (no dashboard, no usage reporting, nothing beyond loopback).
For a cluster, the workload must resolve on every node: an installed package (``pkg.module:attr``, a registered
name) or the same absolute file path.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Callable, Sequence

from .errors import CompressionError
from .sensitivity import sensitivity, Sensitivity, intra_op_threads, layer_names
from .workload import resolve_workload
from .trials import evaluate_recipe
from .budget import fit_budget
from .targets import classifier_name
from .technique import StepContext

EXECUTORS = ("local", "ray")
INSTALL_RAY = 'pip install "compression-lab[ray]"'
ResultFn = Callable[[int, dict], None]


# --------------------------------------------------------------------------------------------------- tasks
def _sweep_task(ref: str, payload: dict) -> dict:
    """Sensitivity curves of some layers of the workload (a part of a sweep)."""
    try:
        wl = resolve_workload(ref)
        res = sensitivity(wl.model, wl, payload["technique"], levels=payload.get("levels"),
                          targets=payload.get("targets"), include_classifier=payload.get("include_classifier", False),
                          heads=payload.get("heads", False), name=wl.name)
    except CompressionError as e:
        return {"error": str(e)}
    return res.model_dump(mode="json")


def _trial_task(ref: str, payload: dict) -> dict:
    return evaluate_recipe(ref, payload)


def _fit_task(ref: str, payload: dict) -> dict:
    """``fit_budget`` for one target from given sensitivity curves: the per-layer choice."""
    try:
        wl = resolve_workload(ref)
        with intra_op_threads(1):
            fit = fit_budget(wl.model, wl, payload["config"], curves=Sensitivity.model_validate(payload["curves"]))
    except CompressionError as e:
        return {"error": str(e)}
    return {"choice": fit.choice, "size_bytes": fit.size_bytes, "accuracy": fit.accuracy}


def _warm_task(ref: str, payload: dict) -> dict:
    """Import the library and build the workload in a worker (its first task pays this once)."""
    t0 = time.perf_counter()
    try:
        resolve_workload(ref)
    except CompressionError as e:
        return {"error": str(e)}
    return {"pid": os.getpid(), "seconds": time.perf_counter() - t0}


TASKS: dict[str, Callable[[str, dict], dict]] = {"trial": _trial_task, "sweep": _sweep_task, "fit": _fit_task,
                                                  "warm": _warm_task}


def run_task(kind: str, ref: str, payload: dict) -> dict:
    """Run one task by kind (what a Ray worker executes; plain data in, plain data out)."""
    return TASKS[kind](ref, payload)


# ----------------------------------------------------------------------------------------------- executors
class Executor:
    """Runs tasks and returns their results in submission order; ``on_result(i, result)`` as each one finishes."""

    name = "local"
    workers: int | None = 1

    def run(self, kind: str, ref: str, payloads: Sequence[dict], on_result: ResultFn | None = None) -> list[dict]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """Every task in this process, one after the other."""

    name = "local"
    workers = 1

    def run(self, kind: str, ref: str, payloads: Sequence[dict], on_result: ResultFn | None = None) -> list[dict]:
        out = []
        for i, p in enumerate(payloads):
            r = run_task(kind, ref, p)
            out.append(r)
            if on_result is not None:
                on_result(i, r)
        return out


def import_ray():
    """The ray module, or a one-line CompressionError telling how to install it."""
    try:
        import ray  # lazy: ray is an optional extra (compression-lab[ray])
    except ImportError:
        raise CompressionError(f"--executor ray: the ray package is not installed; install it with {INSTALL_RAY}") \
            from None
    return ray


def _parse_address(address: str) -> tuple[str, int] | None:
    """(host, port) to check before connecting; None for ``auto`` (Ray finds the cluster itself)."""
    a = address.strip()
    if a == "auto":
        return None
    for prefix in ("ray://", "gcs://"):
        if a.startswith(prefix):
            a = a[len(prefix):]
    host, sep, port = a.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CompressionError(f"--ray-address: expected host:port (e.g. 10.0.0.5:6379, ray://10.0.0.5:10001 or "
                               f"auto), got {address!r}")
    return host.strip("[]"), int(port)


_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """A one-line error when nothing listens at ``address``, or something that is not a gRPC server (Ray's GCS and
    client server are): Ray itself would retry for minutes."""
    hp = _parse_address(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(_HTTP2_PREFACE)
            head = b""
            while len(head) < 9:  # the server's first HTTP/2 frame header: a SETTINGS frame (type 4)
                chunk = s.recv(9 - len(head))
                if not chunk:
                    break
                head += chunk
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise CompressionError(f"--ray-address: cannot reach a Ray cluster at {address} ({why}); start one with "
                               f"`ray start --head` there, or leave --ray-address out for a local runtime") from None
    if len(head) < 9 or head[3] != 4:
        raise CompressionError(f"--ray-address: {address} answers but is not a Ray cluster (no gRPC server there); "
                               f"give the head node's GCS port (default 6379) or ray://host:10001")


def _is_loopback(address: str) -> bool:
    hp = _parse_address(address)
    if hp is None:
        return False
    if hp[0] == "localhost":
        return True
    try:
        return ipaddress.ip_address(hp[0]).is_loopback
    except ValueError:
        return False


def _loopback_only(ray) -> None:
    """Make a local Ray runtime bind and advertise 127.0.0.1 (Ray otherwise picks the machine's outward address)
    and never report usage over the network. Set before ``ray.init``; inherited by the processes it starts."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # read at import by ray_constants: loopback node address
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    try:
        from ray._private import ray_constants  # lazy: ray is an optional extra (compression-lab[ray])

        ray_constants.ENABLE_RAY_CLUSTER = False  # ray may have been imported before the variable was set
    except Exception:  # pragma: no cover - a Ray version without it: the variable alone does it
        pass


def _token_auth_if_available() -> None:
    """Send the cluster's token when one is available (as ``ray start`` does): RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or
    ~/.ray/auth_token, unless RAY_AUTH_MODE says otherwise."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    try:  # Ray's own rule for `ray start`, which also reloads its C++ config
        from ray._private.authentication.authentication_token_setup import (  # lazy: ray is an optional extra
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # pragma: no cover - another Ray version: the environment variable alone
        token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray",
                                                                             "auth_token")
        if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(token_file):
            os.environ["RAY_AUTH_MODE"] = "token"
        return
    quiet = logging.getLogger("ray._private.authentication.authentication_token_setup")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its notice about token mode is not ours to print
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        quiet.setLevel(level)


class _Captured:
    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()

    def read(self) -> str:
        try:
            self.file.seek(0)
            return self.file.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""


@contextmanager
def _captured_stderr():
    """File descriptor 2 into a temporary file for the block (C++ logging included); yields it for reading."""
    cap = _Captured()
    try:
        sys.stderr.flush()
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured by a test runner)
        yield cap
        return
    saved = os.dup(fd)
    os.dup2(cap.file.fileno(), fd)
    try:
        yield cap
    finally:
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)


def _connect_error(address: str, e: BaseException, log: str) -> str:
    text = f"{e}\n{log}"
    if "InvalidAuthToken" in text or "Authentication token" in text or "AuthenticationError" in type(e).__name__:
        return (f"--ray-address: the Ray cluster at {address} wants its authentication token; copy it from the head "
                f"node (`ray get-auth-token`) into ~/.ray/auth_token or RAY_AUTH_TOKEN")
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return f"--ray-address: cannot connect to a Ray cluster at {address} ({type(e).__name__}: {first})"


class RayExecutor(Executor):
    """Tasks as Ray tasks (1 CPU each). Connects to ``address`` or starts a local runtime on 127.0.0.1 with
    ``workers`` CPUs; a runtime already initialised in this process is reused (and left running)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        ray = import_ray()
        self._ray = ray
        self._owned = False
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
            raise CompressionError(f"workers: must be a positive integer, got {workers!r}")
        if not ray.is_initialized():
            if address:
                check_reachable(address)
                if _is_loopback(address):  # a cluster on this machine (ray start --head here): stay on loopback
                    _loopback_only(ray)
                _token_auth_if_available()
                try:
                    with _captured_stderr() as log:  # Ray's C++ client logs each retry on fd 2: keep one line
                        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
                except Exception as e:
                    raise CompressionError(_connect_error(address, e, log.read())) from None
            else:
                _loopback_only(ray)
                try:
                    ray.init(address="local",  # a new runtime, even when `ray start` left a cluster on this machine
                             num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                             logging_level="ERROR")
                except Exception as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                    raise CompressionError(f"--executor ray: cannot start a local Ray runtime "
                                           f"({type(e).__name__}: {first})") from None
            self._owned = True
        try:
            self.workers = int(ray.cluster_resources().get("CPU", 0)) or None
        except Exception:  # pragma: no cover
            self.workers = workers
        self._remote = ray.remote(num_cpus=1, max_retries=0)(run_task)

    @property
    def address(self) -> str | None:
        try:
            return self._ray.get_runtime_context().gcs_address
        except Exception:  # pragma: no cover
            return None

    def run(self, kind: str, ref: str, payloads: Sequence[dict], on_result: ResultFn | None = None) -> list[dict]:
        ray = self._ray
        refs = [self._remote.remote(kind, ref, p) for p in payloads]
        index = {r: i for i, r in enumerate(refs)}
        out: list[Any] = [None] * len(refs)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                i = index[r]
                try:
                    out[i] = ray.get(r)
                except Exception as e:  # not a recipe problem (those come back as results): a worker that cannot
                    for p in pending:  # import the library, died, or lost its node; stop with one line
                        ray.cancel(p, force=True)
                    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
                    last = lines[-1][:300] if lines else type(e).__name__
                    raise CompressionError(f"--executor ray: a {kind} task failed on a worker "
                                           f"({type(e).__name__}: {last})") from None
                if on_result is not None:
                    on_result(i, out[i])
        return out

    def warm_up(self, ref: str) -> list[dict]:
        """Build the workload in every worker (one task per CPU; Ray may place two on one worker)."""
        return self.run("warm", ref, [{} for _ in range(self.workers or 1)])

    def close(self) -> None:
        if self._owned:
            self._owned = False
            self._ray.shutdown()


def make_executor(name: str = "local", ray_address: str | None = None, workers: int | None = None) -> Executor:
    """``local`` or ``ray`` (one-line CompressionError for an unknown name, a missing ray package, or an
    unreachable address)."""
    if name == "local":
        if ray_address:
            raise CompressionError("--ray-address: only with --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(ray_address, workers)
    raise CompressionError(f"--executor: must be local or ray, got {name!r}")


# ----------------------------------------------------------------------------------------------- sweeps
def sweep_on(ex: Executor, ref: str, technique: str = "prune", levels=None, include_classifier: bool = False,
             heads: bool = True, targets: list[str] | None = None, progress=None):
    """A sensitivity sweep of the workload ``ref`` on an executor: locally one ``sensitivity`` call; on Ray one
    task per layer (the first also computes the ViT head importance), merged in layer order. The curves are the
    same either way (each point is one layer alone, restored afterwards); ``seconds`` is the wall time."""
    t0 = time.perf_counter()
    wl = resolve_workload(ref)
    if isinstance(ex, LocalExecutor):
        return sensitivity(wl.model, wl, technique, levels=levels, targets=targets,
                           include_classifier=include_classifier, heads=heads, name=wl.name, progress=progress)
    names = layer_names(wl.model, technique, classifier_name(wl.model, StepContext(data=wl)), include_classifier,
                        targets)
    lv = list(levels) if levels is not None else None
    payloads = [{"technique": technique, "levels": lv, "targets": [n], "include_classifier": include_classifier,
                 "heads": heads and i == 0} for i, n in enumerate(names)]
    count = [0]

    def done(i: int, r: dict) -> None:
        count[0] += 1
        if progress is not None and "error" not in r:
            progress(count[0] / len(names), f"{names[i]}: {len(r['layers'][0]['points'])} levels")

    parts = ex.run("sweep", ref, payloads, done)
    for r in parts:
        if "error" in r:
            raise CompressionError(r["error"])
    first = parts[0]
    return Sensitivity.model_validate({**first, "layers": [p["layers"][0] for p in parts],
                                       "seconds": time.perf_counter() - t0})


def sensitivity_sweep(ref: str, technique: str = "prune", executor: str = "local", ray_address: str | None = None,
                      workers: int | None = None, **kw):
    """``sensitivity`` of the workload ``ref`` run by the named executor (what the ``sensitivity`` command calls
    with ``--executor``/``--ray-address``)."""
    with make_executor(executor, ray_address=ray_address, workers=workers) as ex:
        return sweep_on(ex, ref, technique, **kw)


__all__ = ["EXECUTORS", "Executor", "INSTALL_RAY", "LocalExecutor", "RayExecutor", "check_reachable", "import_ray",
           "make_executor", "run_task", "sensitivity_sweep", "sweep_on"]
