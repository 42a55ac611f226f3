"""Nothing lost: a process killed while saving a bundle leaves the old bundle or the new one; the workshop load
benchmark runs (tiny) and its checks hold; the offline guard also refuses DNS lookups when asked to."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compression_core.bundle import read_bundle

ROOT = Path(__file__).resolve().parent.parent

# Alternates two recipes on the biggest sample model (~1 MB bundles), so old and new files differ.
SAVER = r"""
import sys
from compression_core.bundle import save_bundle
from compression_core.recipe import apply_recipe, load_recipe
path = sys.argv[1]
made = []
for amount in (0.5, 0.7):
    r = load_recipe({"version": 1, "model": "mnist-lenet300", "seed": 0,
                     "steps": [{"kind": "prune_unstructured", "amount": amount}]})
    made.append((r, apply_recipe(r, with_latency=False, measure_before=False, measure_after=False).model))
save_bundle(path, *made[0])
print("ready", flush=True)
i = 1
while True:
    save_bundle(path, *made[i % 2])
    i += 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.07, 0.2])
def test_killed_save_bundle_leaves_old_or_new_bundle(tmp_path, delay):
    target = tmp_path / "model.bundle.pt"
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(target)], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    recipe, state = read_bundle(target)  # a partial file would fail here (zip directory at the end)
    amount = recipe.steps[0].amount
    assert amount in (0.5, 0.7)
    w = state["fc1.weight"]
    assert abs(float((w == 0).float().mean()) - amount) < 0.05  # the weights belong to that recipe
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != target.name]
    assert all(n.startswith(".model.bundle.pt.") and n.endswith(".tmp") for n in leftovers), leftovers


@pytest.mark.slow
def test_cli_apply_save_model_killed_leaves_old_or_new(tmp_path):
    """The CLI's --save-model goes through the same atomic writer: a kill at any point leaves a readable bundle."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text("version: 1\nmodel: digits-mlp\nseed: 0\nsteps:\n- kind: prune_unstructured\n  amount: 0.3\n")
    target = tmp_path / "out.bundle.pt"
    done = subprocess.run([sys.executable, "-m", "compression_core", "apply", str(recipe), "--no-latency",
                           "--save-model", str(target)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    old = target.read_bytes()
    recipe.write_text(recipe.read_text().replace("0.3", "0.6"))
    proc = subprocess.Popen([sys.executable, "-m", "compression_core", "apply", str(recipe), "--no-latency",
                             "--save-model", str(target)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(2.5)  # somewhere in import, apply or write
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = target.read_bytes()
    if data != old:
        assert read_bundle(target)[0].steps[0].amount == 0.6


@pytest.mark.slow
def test_workshop_load_smoke():
    """Three sessions on one real server for a few seconds. Only what machine load cannot change is asserted: no
    errors, no leaks, every session checked at least once (each session's clock starts after its own page load and
    it always checks one move), baselines unchanged. Timings are the benchmark's business, not CI's."""
    from benchmarks import workshop_load

    r = workshop_load.run(sessions=3, duration=2.0, think=0.5, models=["digits-mlp"])
    assert r["errors"] == 0, r["error_samples"]
    assert r["leaks"] == 0, r["leak_samples"]
    assert r["sessions_checked"] == 3, f"sessions that never checked a move: {r['unchecked']}"
    assert r["baselines_unchanged"], r["baseline_check"]
    assert r["server_tracebacks"] == 0, r["traceback_sample"]
    assert r["server_rss_peak_mb"] > 0 and r["interaction_p95_ms"] is not None


def test_strict_offline_guard_refuses_dns(monkeypatch):
    """With COMPRESSION_LAB_STRICT_OFFLINE=1 the conftest guard also refuses name lookups other than loopback."""
    import conftest

    monkeypatch.setattr(socket, "getaddrinfo", conftest._guarded_getaddrinfo)
    with pytest.raises(conftest.NetworkBlocked):
        socket.getaddrinfo("pypi.org", 443)
    assert socket.getaddrinfo("localhost", 80)
    assert socket.getaddrinfo("127.0.0.1", 80)
