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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A parametrized test marked ``first_case_fast`` runs its first case in the fast set (plain ``pytest``) and its
    other cases as ``slow`` (``bash scripts/test.sh`` runs them all): one model in minutes, every model in CI."""
    seen = set()
    for item in items:
        if item.get_closest_marker("first_case_fast") is None:
            continue
        key = (str(item.path), item.originalname)
        if key in seen:
            item.add_marker(pytest.mark.slow)
        else:
            seen.add(key)


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
