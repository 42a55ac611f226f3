"""Workshop load: ONE dashboard server, N concurrent sessions moving the sparsity slider on the digits models.

``python -m benchmarks.workshop_load --sessions 40 [--duration SECONDS] [--think SECONDS] [--json]``

Each session is a Streamlit client speaking the browser's own protocol over the websocket (``/_stcore/stream``,
protobuf ``BackMsg`` / ``ForwardMsg``): it opens the Explore page, picks its digits model, picks unstructured
pruning, then moves the sparsity slider to its own sequence of values for ``--duration`` seconds, with a think
time between moves. Why not 40 headless chromium contexts: on this shared 2-core machine the browsers' rendering
would eat the CPU the server needs and we would measure chromium, not the server; the server does exactly the same
work for a websocket client (it runs the page script and sends the same ForwardMsgs), so this measures what a
workshop would load it with. (The dashboard's own Playwright test covers the real browser.)

Checked per interaction: the run finished, no exception element and no ``st.error`` line, and the page shows
THIS session's numbers: the "Accuracy" and "Non-zero parameters" metrics equal the library's own result for the
session's (model, sparsity) computed in this process before the server starts (a leak between sessions would show
another student's numbers). After the run, the cached baselines in the server are checked unchanged: the server is
started through this module's ``--serve`` mode, a test-only wrapper around ``streamlit run`` that on SIGUSR1 hashes
the cached baseline models (``state.baseline(name)``) and the shared data splits and compares them with the hashes
taken at start-up. Nothing is added to the dashboard itself. Server memory is the server process's RSS from /proc.
Loopback only.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .local_app import ROOT, free_port, stop, streamlit_argv, wait_healthy

MODELS = ["digits-mlp", "digits-cnn", "digits-vit"]
AMOUNTS = [round(i * 0.05, 2) for i in range(20)]  # the slider's values (0.0 .. 0.95, step 0.05)
PRUNE_LABEL = "unstructured (weights)"


# ------------------------------------------------------------------------------------------- server side
def _tensor_hash(tensors) -> str:
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _hashes(models: dict) -> dict:
    """sha256 of each baseline model's state_dict and of its shared data splits."""
    out = {}
    for name, sm in models.items():
        d = sm.data
        out[name] = {
            "weights": _tensor_hash(sorted(sm.model.state_dict().items())),
            "data": _tensor_hash([(f"{s}.{a}", getattr(getattr(d, s), a)) for s in ("train", "calib", "test")
                                  for a in ("x", "y")]),
        }
    return out


def _serve(port: int, report: str) -> None:
    """Run ``streamlit run dashboard/app.py`` in this process; on SIGUSR1 write the baseline check to ``report``."""
    import sample_models

    start = _hashes({n: sample_models.load(n) for n in MODELS})  # fresh from the shipped weights, before any session

    def check() -> None:
        try:
            state = sys.modules.get("state")  # the dashboard's state module, imported by the pages
            if state is None:
                result = {"ok": False, "error": "dashboard state module not loaded"}
            else:
                now = _hashes({n: state.baseline(n) for n in MODELS})
                fresh = _hashes({n: sample_models.load(n) for n in MODELS})
                result = {"ok": now == start and fresh == start, "start": start, "cached_after": now,
                          "fresh_after": fresh}
        except Exception as e:  # reported, not raised: the driver prints it
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        Path(report + ".tmp").write_text(json.dumps(result))
        os.replace(report + ".tmp", report)

    signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=check, daemon=True).start())
    from streamlit.web import cli

    sys.argv = ["streamlit", *streamlit_argv(port)]
    sys.exit(cli.main())


# ------------------------------------------------------------------------------------------- oracle
def _recipe(model: str, amount: float) -> dict:
    """The recipe the Explore page builds for unstructured pruning at ``amount`` (all layers, classifier kept)."""
    return {"version": 1, "model": model, "seed": 0,
            "steps": [{"kind": "prune_unstructured", "amount": amount, "scope": "global",
                       "include_classifier": False}]}


def oracle(models=MODELS, amounts=AMOUNTS) -> dict:
    """(model, amount) -> the metric texts the page must show, from the library's own ``apply_recipe``."""
    import torch

    from compression_core.recipe import apply_recipe

    torch.set_num_threads(1)
    out = {}
    for m in models:
        for a in amounts:
            r = apply_recipe(_recipe(m, a), with_latency=False, measure_before=False)
            out[(m, a)] = {"Accuracy": f"{r.after.accuracy * 100:.2f} %",
                           "Non-zero parameters": f"{r.after.nonzero_params:,}"}
    return out


# ------------------------------------------------------------------------------------------- clients
class Session:
    """One student: a websocket Streamlit client that remembers its widget values like the browser does."""

    def __init__(self, idx: int, url: str, model: str, rng: random.Random) -> None:
        self.idx, self.url, self.model, self.rng = idx, url, model, rng
        self.widgets: dict[str, object] = {}  # widget id -> WidgetState (sent with every rerun, as the browser does)
        self.times: list[float] = []
        self.errors: list[str] = []
        self.mismatches: list[str] = []
        self.checked = 0
        self.first_load: float | None = None
        self.runs = 0

    async def run_script(self, ws) -> tuple[float, dict]:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        back = BackMsg()
        back.rerun_script.query_string = ""
        back.rerun_script.widget_states.widgets.extend(self.widgets.values())
        t0 = time.perf_counter()
        self.runs += 1
        await ws.send(back.SerializeToString())
        elements: dict = {"_metrics": {}, "_ids": {}}
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(await ws.recv())
            kind = msg.WhichOneof("type")
            if kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                el = msg.delta.new_element
                ek = el.WhichOneof("type")
                sub = getattr(el, ek)
                if ek == "exception":
                    self.errors.append(f"exception: {sub.type}: {sub.message[:200]}")
                elif ek == "alert" and sub.format == sub.ERROR:
                    self.errors.append(f"st.error: {sub.body[:200]}")
                elif ek == "metric":
                    elements["_metrics"][sub.label] = sub.body
                if getattr(sub, "id", "") and getattr(sub, "label", ""):
                    elements["_ids"][(ek, sub.label)] = sub.id
            elif kind == "script_finished":
                status = msg.script_finished
                if status not in (0, 3):  # finished successfully (or a fragment finished)
                    self.errors.append(f"script finished with status {status}")
                return time.perf_counter() - t0, elements

    def _set(self, els: dict, ek: str, label: str, field: str, value) -> None:
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        wid = els["_ids"].get((ek, label))
        if wid is None:
            raise RuntimeError(f"session {self.idx}: no {ek} {label!r} on the page")
        w = WidgetState(id=wid)
        if field == "double_array_value":
            w.double_array_value.data.extend(value)
        else:
            setattr(w, field, value)
        self.widgets[wid] = w

    async def main(self, deadline: float, think: float, expected: dict) -> None:
        import websockets

        try:
            async with websockets.connect(self.url, subprotocols=["streamlit"], max_size=None,
                                          open_timeout=120, ping_interval=None) as ws:
                t, els = await self.run_script(ws)
                self.first_load = t
                self._set(els, "selectbox", "Model", "string_value", self.model)
                _, els = await self.run_script(ws)
                self._set(els, "radio", "Pruning kind", "string_value", PRUNE_LABEL)
                _, els = await self.run_script(ws)
                k = 0
                while time.monotonic() < deadline:
                    # each session walks its own sequence: sessions on the same model sit on different values
                    amount = AMOUNTS[(self.idx * 7 + k * 3) % len(AMOUNTS)]
                    self._set(els, "slider", "Sparsity (fraction removed)", "double_array_value", [amount])
                    t, els = await self.run_script(ws)
                    self.times.append(t)
                    want = expected[(self.model, amount)]
                    got = {key: els["_metrics"].get(key) for key in want}
                    self.checked += 1
                    if got != want:
                        self.mismatches.append(f"session {self.idx} {self.model} amount {amount}: "
                                               f"saw {got}, expected {want}")
                    k += 1
                    await asyncio.sleep(self.rng.uniform(0.5 * think, 1.5 * think))
        except Exception as e:
            self.errors.append(f"session {self.idx}: {type(e).__name__}: {str(e)[:200]}")


# ------------------------------------------------------------------------------------------- driver
def _rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) of ``pid`` in MB, from /proc/PID/status."""
    vals = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, kb = line.split()[:2]
            vals[key] = int(kb) / 1024
    return vals.get("VmRSS:", 0.0), vals.get("VmHWM:", 0.0)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (from /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


async def _drive(n: int, port: int, duration: float, think: float, expected: dict, pid: int,
                 models: list[str]) -> tuple[list, dict]:
    rng = random.Random(0)
    sessions = [Session(i, f"ws://127.0.0.1:{port}/_stcore/stream", models[i % len(models)],
                        random.Random(rng.random())) for i in range(n)]
    mem = {"samples": []}
    stop = asyncio.Event()

    async def sample() -> None:
        while not stop.is_set():
            mem["samples"].append(_rss_mb(pid)[0])
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    sampler = asyncio.create_task(sample())
    deadline = time.monotonic() + duration
    t0 = time.monotonic()
    cpu0, own0 = _cpu_s(pid), time.process_time()
    await asyncio.gather(*(s.main(deadline, think, expected) for s in sessions))
    mem["wall_s"] = time.monotonic() - t0
    mem["server_cpu_s"], mem["driver_cpu_s"] = _cpu_s(pid) - cpu0, time.process_time() - own0
    stop.set()
    await sampler
    return sessions, mem


def run(sessions: int = 40, duration: float = 120.0, think: float = 1.5, models: list[str] | None = None) -> dict:
    models = list(models or MODELS)
    t0 = time.perf_counter()
    expected = oracle(models)
    oracle_s = time.perf_counter() - t0
    port = free_port()
    report = tempfile.mktemp(prefix="workshop_baselines_", suffix=".json")
    log = tempfile.NamedTemporaryFile(prefix="workshop_server_", suffix=".log", delete=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.workshop_load", "--serve", str(port), report],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_healthy(port, proc, timeout=120)
        rss_idle = _rss_mb(proc.pid)[0]
        clients, mem = asyncio.run(_drive(sessions, port, duration, think, expected, proc.pid, models))
        rss_end, rss_peak = _rss_mb(proc.pid)
        proc.send_signal(signal.SIGUSR1)
        t1 = time.monotonic()
        while not os.path.exists(report) and time.monotonic() - t1 < 60:
            time.sleep(0.2)
        baselines = json.loads(Path(report).read_text()) if os.path.exists(report) else {"ok": False,
                                                                                         "error": "no report"}
    finally:
        stop(proc, timeout=20)
        if os.path.exists(report):
            os.unlink(report)
    times = [t for s in clients for t in s.times]
    errors = [e for s in clients for e in s.errors]
    mismatches = [m for s in clients for m in s.mismatches]
    loads = [s.first_load for s in clients if s.first_load is not None]
    server_log = Path(log.name).read_text(errors="replace")
    tracebacks = server_log.count("Traceback")
    os.unlink(log.name)
    return {
        "sessions": sessions, "duration_s": duration, "think_s": think, "wall_s": round(mem["wall_s"], 1),
        "models": models, "interactions": len(times), "checked": sum(s.checked for s in clients),
        "errors": len(errors), "error_samples": errors[:5],
        "leaks": len(mismatches), "leak_samples": mismatches[:5],
        "baselines_unchanged": bool(baselines.get("ok")), "baseline_check": baselines.get("error", "hashes equal"
                                                                                         if baselines.get("ok")
                                                                                         else "hashes differ"),
        "server_tracebacks": tracebacks,
        "interaction_p50_ms": None if not times else round(statistics.median(times) * 1000, 1),
        "interaction_p95_ms": None if not times else round(pct(times, 95) * 1000, 1),
        "interaction_max_ms": None if not times else round(max(times) * 1000, 1),
        "first_load_p50_ms": None if not loads else round(statistics.median(loads) * 1000, 1),
        "first_load_max_ms": None if not loads else round(max(loads) * 1000, 1),
        "script_runs": sum(s.runs for s in clients),
        "server_cpu_s": round(mem["server_cpu_s"], 1), "driver_cpu_s": round(mem["driver_cpu_s"], 1),
        "server_cpu_ms_per_run": round(1000 * mem["server_cpu_s"] / max(1, sum(s.runs for s in clients)), 1),
        "throughput_per_s": round(len(times) / mem["wall_s"], 2) if mem["wall_s"] else None,
        "server_rss_idle_mb": round(rss_idle, 1), "server_rss_end_mb": round(rss_end, 1),
        "server_rss_peak_mb": round(max([rss_peak] + mem["samples"]), 1),
        "oracle_s": round(oracle_s, 1), "cpu_count": os.cpu_count(),
        "ok": not errors and not mismatches and bool(baselines.get("ok")) and bool(times) and tracebacks == 0,
    }


def _text(r: dict) -> str:
    lines = [
        f"workshop load: {r['sessions']} sessions x {r['duration_s']:.0f} s on one server ({', '.join(r['models'])};"
        f" think time ~{r['think_s']} s; {r['cpu_count']} shared cores)",
        f"interactions        {r['interactions']} ({r['throughput_per_s']}/s), each checked against the library",
        f"interaction time    p50 {r['interaction_p50_ms']} ms, p95 {r['interaction_p95_ms']} ms, "
        f"max {r['interaction_max_ms']} ms (slider move -> script finished)",
        f"server CPU          {r['server_cpu_s']} s for {r['script_runs']} script runs "
        f"({r['server_cpu_ms_per_run']} ms/run); load driver {r['driver_cpu_s']} s",
        f"first page load     p50 {r['first_load_p50_ms']} ms, max {r['first_load_max_ms']} ms",
        f"server RSS          idle {r['server_rss_idle_mb']} MB, end {r['server_rss_end_mb']} MB, "
        f"peak {r['server_rss_peak_mb']} MB",
        f"errors              {r['errors']} {r['error_samples'] or ''}",
        f"leaks               {r['leaks']} {r['leak_samples'] or ''}",
        f"server tracebacks   {r['server_tracebacks']}",
        f"baselines unchanged {r['baselines_unchanged']} ({r['baseline_check']})",
        f"OK                  {r['ok']}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        _serve(int(argv[1]), argv[2])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=40)
    p.add_argument("--duration", type=float, default=120.0, help="seconds each session keeps moving sliders")
    p.add_argument("--think", type=float, default=1.5, help="mean seconds a student waits between moves")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if not 1 <= a.sessions <= 200 or a.duration <= 0:
        p.error("--sessions must be 1..200 and --duration > 0")
    r = run(a.sessions, a.duration, a.think)
    print(json.dumps(r, indent=2) if a.json else _text(r))
    return 0 if r["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
