"""Shared fixtures. Every test runs offline: connections to anything but loopback are refused."""

from __future__ import annotations

import ipaddress
import os
import socket

import pytest
import torch

# The dashboard's history database: one temporary file per test process (never the repository's own; each
# pytest-xdist worker its own, as the controller's environment is inherited by the workers).
if "COMPRESSION_LAB_DB" not in os.environ or os.environ.get("COMPRESSION_LAB_DB_SET_BY_TESTS") == "1":
    import tempfile

    _worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    os.environ["COMPRESSION_LAB_DB"] = os.path.join(tempfile.mkdtemp(prefix=f"compression-lab-tests-{_worker}-"),
                                                    "history.sqlite3")
    os.environ["COMPRESSION_LAB_DB_SET_BY_TESTS"] = "1"

# One intra-op torch thread in every test process, and (OMP_NUM_THREADS, inherited) in the servers and CLI processes
# the tests start: the full run is two xdist workers on two cores, where a second thread per process only spins
# against the other worker (on the shared 2-core machine, test_cost.py's 12 MiniLM pairs: 168 s on two threads, 22 s
# on one; its digits-vit and digits-lstm pairs: 22-28 s, 6.7 s). Latency is measured on one thread anyway;
# OMP_NUM_THREADS set outside wins.
os.environ["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS") or "1"
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


class NetworkBlocked(RuntimeError):
    pass


def _is_loopback(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self, address):
    if not _is_loopback(address):
        raise NetworkBlocked(f"test tried to reach the network: {address!r}")
    return _real_connect_ex(self, address)


_real_getaddrinfo = socket.getaddrinfo


def _guarded_getaddrinfo(host, *args, **kwargs):
    """Name lookups only for loopback names (used when COMPRESSION_LAB_STRICT_OFFLINE=1)."""
    name = host.decode() if isinstance(host, bytes) else host
    if name is not None and name not in ("localhost", "") and not _is_loopback((name,)):
        raise NetworkBlocked(f"test tried to look up a host name: {name!r}")
    return _real_getaddrinfo(host, *args, **kwargs)


def pytest_configure(config):
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    if os.environ.get("COMPRESSION_LAB_STRICT_OFFLINE") == "1":  # also refuse DNS lookups of non-loopback names
        socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]


# The test files that take longest in a full run (`bash scripts/test.sh`, two xdist workers, one file per worker at a
# time), longest first: a worker starts them first, so that the run does not end on one worker still busy with a big
# file while the other is idle (the small files fill in at the end). Rough seconds of a full run's --durations on 2
# cores (before the one-thread setting above, which shortens the model-heavy files most); refresh the order from a
# run's "slowest durations" when a file grows. The other files follow in the usual order. scripts/test.sh passes
# --no-loadscope-reorder so that xdist keeps this order (its default runs files with the most tests first, which put
# the 1-test, 90-second browser walk last).
RUN_FIRST = (
    "test_dashboard_transformer.py",  # ~140 s: MiniLM head slider in AppTest; stages, head slider, tiny-lm in chromium
    "test_zoo.py",  # ~110 s: every technique x every zoo model, the zoo trained on first use
    "test_recipes_dir.py",  # ~105 s: every recipe, MiniLM distillation
    "test_cost.py",  # ~95 s: 591 estimate-vs-artefact pairs, 12 of them on MiniLM
    "test_browser_walk.py",  # ~90 s: one walk through five pages
    "test_take_home.py",  # ~100 s: three chromium tests on one server (Must show #1, bundle, tables)
    "test_classroom.py",  # ~70 s: two browsers
    "test_workload.py",  # ~70 s
    "test_browser.py",  # ~60 s: every page at two sizes side by side
    "test_identity.py",
    "test_dashboard.py",
    "test_search.py",
    "test_reliability.py",
    "test_hostile.py",
    "test_jobs.py",
    "test_onnx.py",
    "test_peak_ram.py",
    "test_explore_stages.py",  # ~35 s: MiniLM stages in AppTest
    "test_minilm.py",
    "test_quant_static.py",
    "test_prune_layers.py",
    "test_hf_import.py",
    "test_language_benchmark.py",
    "test_tiny_lm.py",
    "test_workshop.py",
    "test_ort_deploy.py",
    "test_budget.py",
    "test_graph.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A parametrized test marked ``first_case_fast`` runs its first case in the fast set (plain ``pytest``) and its
    other cases as ``slow`` (``bash scripts/test.sh`` runs them all): one model in minutes, every model in CI. In an
    xdist worker, the RUN_FIRST files come first."""
    seen = set()
    for item in items:
        if item.get_closest_marker("first_case_fast") is None:
            continue
        key = (str(item.path), item.originalname)
        if key in seen:
            item.add_marker(pytest.mark.slow)
        else:
            seen.add(key)
    # In an xdist worker (its collection is the order the controller hands out files in): the RUN_FIRST files first,
    # in that order, then the others as collected; the tests inside a file keep their order.
    if hasattr(config, "workerinput"):
        rank = {name: i for i, name in enumerate(RUN_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(RUN_FIRST)))  # stable


@pytest.fixture(autouse=True)
def _fixed_threads_and_seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_cheap_faster_path(monkeypatch):
    """``apply``/``measure --bundle``/``advise`` compare engines when a model comes out slower (compression_core.
    faster): in tests about other things, one cheap path (no ONNX export) instead of every engine; tests/test_faster.py
    names its paths itself. Subprocesses inherit it."""
    monkeypatch.setenv("COMPRESSION_LAB_FASTER_PATHS", "torch dynamic int8")


@pytest.fixture
def no_sockets(monkeypatch):
    """Stricter: no socket may even be created (not even loopback)."""

    def refuse(*args, **kwargs):
        raise NetworkBlocked("socket creation blocked in this test")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield
