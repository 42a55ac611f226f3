"""The dashboard served on loopback for the browser tests and the dashboard/workshop benchmarks: one way to pick a
port, start `streamlit run dashboard/server.py` (the class server: identity cookie, teacher link), wait for its health
endpoint, and stop it; and how to launch Debian's chromium here (Playwright's own browser download does not work on
these machines)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "dashboard" / "server.py"


def entry(root: Path | str = ROOT) -> Path:
    """The checkout's server entry: ``dashboard/server.py``, or ``dashboard/app.py`` in a checkout older than it."""
    d = Path(root) / "dashboard"
    return d / "server.py" if (d / "server.py").is_file() else d / "app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def streamlit_argv(port: int, app: Path | str = APP) -> list[str]:
    """`streamlit run` arguments for the dashboard on 127.0.0.1:port, headless, no usage statistics."""
    return ["run", str(app), "--server.headless", "true", "--server.port", str(port), "--server.address", "127.0.0.1",
            "--browser.gatherUsageStats", "false"]


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    """Return once the server on ``port`` answers its health endpoint; kill it and raise if it exits or never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace")[-2000:] if proc.stdout else ""
            raise RuntimeError(f"streamlit exited with code {proc.returncode}: {out}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"streamlit did not answer within {timeout:.0f} s")


def start_app(port: int, timeout: float = 60, root: Path | str = ROOT, app_args: list[str] | None = None,
              script: Path | str | None = None) -> subprocess.Popen:
    """`streamlit run dashboard/server.py` on 127.0.0.1:port, returned once it is healthy. ``root``: another checkout
    (its own dashboard, library and .streamlit/config.toml, e.g. an older commit to compare with); ``app_args``:
    the app's own arguments (``--workload REF`` ...), passed after ``--``; ``script``: another Streamlit script to
    serve instead of the checkout's dashboard (run from ``root``)."""
    root = Path(root)
    extra = ["--", *app_args] if app_args else []
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", *streamlit_argv(port, script or entry(root)), *extra],
                            cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_healthy(port, proc, timeout)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate the server, killing it if it does not exit within ``timeout`` seconds."""
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
