"""Workshop load: ONE dashboard server, N concurrent sessions on the digits models; K of them run training jobs.

``python -m benchmarks.workshop_load --sessions 40 [--duration SECONDS] [--think SECONDS] [--trainers K]
[--processes P] [--db URL] [--compare-one] [--json]``

Each session is a Streamlit client speaking the browser's own protocol over the websocket (``/_stcore/stream``,
protobuf ``BackMsg`` / ``ForwardMsg``): it opens the Explore page, picks its digits model and unstructured pruning,
then moves the sparsity slider to its own sequence of values with a think time between moves. Each session's clock
starts after ITS page load (a slow first load on a busy server does not eat its measuring time), and every session
checks at least one move whatever the duration. Like the browser, a client first loads the page over HTTP (which
gives it the server's HttpOnly identity cookie), sends that cookie with the websocket handshake, sends back the
query string the server set and runs a fragment when the server asks it to (``auto_rerun``).

``--trainers K``: K sessions (on digits-cnn) tick "fine-tune" (10 epochs), and for each of their slider values
press "Run training steps", which the dashboard runs as a job in its worker processes; the client polls as the
browser does (the job panel's fragment) until the trained numbers are on the page. Slider-move times are reported
for the other sessions only (what a student who is NOT training feels while classmates train); job turnaround
separately.

``--processes P``: P dashboard processes sharing one history database, each session sticking to one of them (what
a reverse proxy with sticky sessions in front of them does; the proxy's own cost is not in these numbers): page
reruns then use more than one core, which one process under one GIL cannot. ``--db URL``: the database they share
(e.g. ``postgresql+psycopg://...``; default a temporary SQLite file, removed afterwards; a URL is used as it is and
keeps what the run wrote: one settings row per session). ``--compare-one``: first the same load on ONE process
(same database), then on P, and the ratio of their slider moves.

After its last move each non-training session reloads against ANOTHER process (the next port; the same one when
there is one): a new websocket with the same cookie, as F5 behind a proxy that lands elsewhere. Its first page must
show the session's own last configuration (model, pruning, sparsity restored from the shared database, metrics equal
to the library's): ``reloads_checked`` / ``reload_mismatches``. Settings are written within ~0.3 s of a move, off the
page, and a first page may show an estimate and measure in the background (its numbers arrive with a poll, followed
here as a browser does); on a loaded machine both take longer, so a reload gets up to 20 s (``reload_max_s``: the
longest wait until the page showed the session's numbers).

Why not 40 headless chromium contexts: on this shared 2-core machine the browsers' rendering would eat the CPU the
server needs and we would measure chromium, not the server; the server does the same work for a websocket client.

Checked per interaction: the run finished, no exception element and no ``st.error`` line, and the page shows THIS
session's numbers: the "Accuracy" and "Non-zero parameters" metrics equal the library's own result for the
session's (model, sparsity[, fine-tune]) computed in this process before the server starts (a leak between sessions
would show another student's numbers). After the run, the cached baselines in the server are checked unchanged: the
server is started through this module's ``--serve`` mode, a test-only wrapper around ``streamlit run`` that on
SIGUSR1 hashes the cached baseline models and data splits and compares them with the hashes taken at start-up.
The server gets its own temporary history database. Loopback only.
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
import urllib.request
from pathlib import Path

from .local_app import ROOT, free_port, stop, streamlit_argv, wait_healthy

MODELS = ["digits-mlp", "digits-cnn", "digits-vit"]
TRAIN_MODEL = "digits-cnn"
AMOUNTS = [round(i * 0.05, 2) for i in range(20)]  # the slider's values (0.0 .. 0.95, step 0.05)
TRAIN_AMOUNTS = [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9]  # walked from each trainer's own offset
TRAIN_EPOCHS = 10  # ~2-3 s of training per job on digits-cnn (1 thread): a worker busy most of the time
PRUNE_LABEL = "unstructured (weights)"
# the Explore page's labels the clients look for
L_MODEL, L_PRUNE, L_AMOUNT = "Model", "Pruning kind", "Sparsity (fraction removed)"
L_FINETUNE, L_EPOCHS, L_RUN = "fine-tune on the labels", "Epochs", "Run training steps"
WATCHED = ("Accuracy", "Non-zero parameters")
COOKIE = "compression_lab_id"  # dashboard/store/identity.py's COOKIE (not imported: the driver loads no dashboard)


def identity_cookie(port: int) -> str | None:
    """Load the page over HTTP as a browser does and return the identity cookie the server set (None: none set)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=180) as r:
        for header in r.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            if name.strip() == COOKIE:
                return rest.split(";")[0].strip()
    return None


# ------------------------------------------------------------------------------------------- server side
def _tensor_hash(tensors) -> str:
    h = hashlib.sha256()
    for name, t in tensors:
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def _splits(wl) -> list:
    out = []
    for s in ("train", "calib", "test"):
        split = getattr(wl, s, None)
        if split is None:
            continue
        for a in ("x", "y"):
            v = getattr(split, a, None)
            if v is not None and hasattr(v, "detach"):
                out.append((f"{s}.{a}", v))
    return out


def _hashes(models: dict) -> dict:
    """sha256 of each baseline model's state_dict and of its shared data splits."""
    return {name: {"weights": _tensor_hash(sorted(wl.model.state_dict().items())),
                   "data": _tensor_hash(_splits(wl))} for name, wl in models.items()}


def _fresh(name: str):
    from compression_core import resolve_workload

    return resolve_workload(name, cache=False)


def _serve(port: int, report: str, server_args: list[str]) -> None:
    """Run ``streamlit run dashboard/server.py -- SERVER_ARGS`` in this process; on SIGUSR1 write the baseline check."""
    start = _hashes({n: _fresh(n) for n in MODELS})  # fresh from the shipped weights, before any session

    def check() -> None:
        try:
            state = sys.modules.get("state")  # the dashboard's state module, imported by the pages
            if state is None:
                result = {"ok": False, "error": "dashboard state module not loaded"}
            else:
                now = _hashes({n: state.baseline(n) for n in MODELS})
                fresh = _hashes({n: _fresh(n) for n in MODELS})
                result = {"ok": now == start and fresh == start, "start": start, "cached_after": now,
                          "fresh_after": fresh}
        except Exception as e:  # reported, not raised: the driver prints it
            result = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        Path(report + ".tmp").write_text(json.dumps(result))
        os.replace(report + ".tmp", report)

    signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=check, daemon=True).start())
    from streamlit.web import cli

    sys.argv = ["streamlit", *streamlit_argv(port), *(["--", *server_args] if server_args else [])]
    sys.exit(cli.main())


# ------------------------------------------------------------------------------------------- oracle
def _recipe(model: str, amount: float, epochs: int = 0) -> dict:
    """The recipe the Explore page builds for unstructured pruning at ``amount`` (all layers, classifier kept;
    the config's own defaults otherwise), then ``epochs`` of fine-tuning when a trainer ran the training step."""
    steps = [{"kind": "prune_unstructured", "amount": amount, "include_classifier": False}]
    if epochs:
        steps.append({"kind": "finetune", "epochs": epochs})
    return {"version": 1, "model": model, "seed": 0, "steps": steps}


def _texts(r) -> dict:
    return {"Accuracy": f"{r.after.accuracy * 100:.2f} %", "Non-zero parameters": f"{r.after.nonzero_params:,}"}


def oracle(models=MODELS, amounts=AMOUNTS, trained: list | None = None, epochs: int = TRAIN_EPOCHS) -> dict:
    """(model, amount, epochs) -> the metric texts the page must show, from the library's own ``apply_recipe``."""
    import torch

    from compression_core.recipe import apply_recipe

    torch.set_num_threads(1)
    out = {}
    for m in models:
        for a in amounts:
            out[(m, a, 0)] = _texts(apply_recipe(_recipe(m, a), with_latency=False, measure_before=False))
    for a in trained or []:
        out[(TRAIN_MODEL, a, epochs)] = _texts(apply_recipe(_recipe(TRAIN_MODEL, a, epochs), with_latency=False,
                                                            measure_before=False))
    return out


# ------------------------------------------------------------------------------------------- clients
class Session:
    """One student: a websocket Streamlit client that remembers its widget values and query string like the
    browser does, and runs the fragments the server schedules."""

    def __init__(self, idx: int, url: str, model: str, rng: random.Random, trainer: bool = False,
                 train_amounts: list[float] | None = None, train_epochs: int = TRAIN_EPOCHS,
                 reload_url: str | None = None) -> None:
        self.idx, self.url, self.model, self.rng, self.trainer = idx, url, model, rng, trainer
        self.reload_url = reload_url  # another process's websocket, for the reload check
        self.cookie: str | None = None
        self.last_amount: float | None = None
        self.reload_checked = False
        self.reload_mismatch: str | None = None
        self.reload_s: float | None = None
        self.train_amounts = list(train_amounts or TRAIN_AMOUNTS)
        self.train_epochs = train_epochs
        self.widgets: dict[str, object] = {}  # widget id -> WidgetState (sent with every rerun, as the browser does)
        self.ids: dict[tuple, str] = {}  # (element type, label) -> widget id, kept across (fragment) runs
        self.fragment_of: dict[str, str] = {}  # widget id -> the fragment it was drawn in (its change reruns that)
        self.query = ""
        self.auto: dict[str, float] = {}  # fragment id -> seconds between the reruns the server asked for
        self.times: list[float] = []
        self.job_times: list[float] = []
        self.errors: list[str] = []
        self.mismatches: list[str] = []
        self.checked = 0
        self.first_load: float | None = None
        self.stage = "connecting"
        self.runs = 0

    async def run_script(self, ws, fragment: str | None = None, triggers=(), auto: bool = False) -> tuple[float, dict]:
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        back = BackMsg()
        back.rerun_script.query_string = self.query
        back.rerun_script.widget_states.widgets.extend(list(self.widgets.values()) + list(triggers))
        if fragment:  # as the browser: a widget inside a fragment reruns only that fragment
            back.rerun_script.fragment_id = fragment
            back.rerun_script.is_auto_rerun = auto
        t0 = time.perf_counter()
        self.runs += 1
        await ws.send(back.SerializeToString())
        elements: dict = {"_metrics": {}, "_ids": self.ids, "_texts": []}
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(await ws.recv())
            kind = msg.WhichOneof("type")
            if kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                el = msg.delta.new_element
                ek = el.WhichOneof("type")
                sub = getattr(el, ek)
                if ek == "exception":
                    self.errors.append(f"session {self.idx}: exception: {sub.type}: {sub.message[:200]}")
                elif ek == "alert":
                    if sub.format == sub.ERROR:
                        self.errors.append(f"session {self.idx}: st.error: {sub.body[:200]}")
                    elements["_texts"].append(sub.body)
                elif ek == "metric":
                    elements["_metrics"][sub.label] = sub.body
                elif ek == "progress":
                    elements["_texts"].append(sub.text)
                if getattr(sub, "id", "") and getattr(sub, "label", ""):
                    elements["_ids"][(ek, sub.label)] = sub.id
                    if msg.delta.fragment_id:
                        self.fragment_of[sub.id] = msg.delta.fragment_id
                    else:
                        self.fragment_of.pop(sub.id, None)
            elif kind == "page_info_changed":
                self.query = msg.page_info_changed.query_string
            elif kind == "auto_rerun":
                self.auto[msg.auto_rerun.fragment_id] = msg.auto_rerun.interval
            elif kind == "stop_auto_rerun":
                for frag in msg.stop_auto_rerun.fragment_ids:
                    self.auto.pop(frag, None)
            elif kind == "script_finished":
                status = msg.script_finished
                if status == 2:  # finished early for a rerun (st.rerun): the rerun's messages follow
                    continue
                if status not in (0, 3):  # finished successfully (or a fragment finished)
                    self.errors.append(f"session {self.idx}: script finished with status {status}")
                return time.perf_counter() - t0, elements

    def _state(self, els: dict, ek: str, label: str, field: str, value):
        from streamlit.proto.WidgetStates_pb2 import WidgetState

        wid = els["_ids"].get((ek, label))
        if wid is None:
            raise RuntimeError(f"no {ek} {label!r} on the page (stage: {self.stage})")
        w = WidgetState(id=wid)
        if field == "double_array_value":
            w.double_array_value.data.extend(value)
        else:
            setattr(w, field, value)
        return w

    def _set(self, els: dict, ek: str, label: str, field: str, value) -> str | None:
        """Set a widget's value; returns the fragment its change reruns (None: the whole page)."""
        w = self._state(els, ek, label, field, value)
        self.widgets[w.id] = w
        return self.fragment_of.get(w.id)

    def _check(self, els: dict, key: tuple, expected: dict) -> bool:
        want = expected[key]
        got = {k: els["_metrics"].get(k) for k in want}
        self.checked += 1
        if got != want:
            self.mismatches.append(f"session {self.idx} {key}: saw {got}, expected {want}")
            return False
        return True

    def _connect(self, url: str):
        import websockets

        headers = {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else None
        return websockets.connect(url, subprotocols=["streamlit"], max_size=None, open_timeout=180,
                                  ping_interval=None, additional_headers=headers)

    async def main(self, duration: float, think: float, expected: dict) -> None:
        try:
            self.stage = "loading the page (identity cookie)"
            port = int(self.url.split(":")[2].split("/")[0])
            self.cookie = await asyncio.to_thread(identity_cookie, port)
            async with self._connect(self.url) as ws:
                self.stage = "first page load"
                t, els = await self.run_script(ws)
                self.first_load = t
                deadline = time.monotonic() + duration  # this session's clock starts after its page load
                self.stage = "choosing the model"
                frag = self._set(els, "selectbox", L_MODEL, "string_value", self.model)
                _, els = await self.run_script(ws, fragment=frag)
                self.stage = "choosing pruning"
                frag = self._set(els, "radio", L_PRUNE, "string_value", PRUNE_LABEL)
                _, els = await self.run_script(ws, fragment=frag)
                if self.trainer:
                    await self._train_loop(ws, els, deadline, think, expected)
                    return
                k = 0
                self.stage = "moving the slider"
                while k == 0 or time.monotonic() < deadline:  # at least one checked move, whatever the load
                    # each session walks its own sequence: sessions on the same model sit on different values
                    amount = AMOUNTS[(self.idx * 7 + k * 3) % len(AMOUNTS)]
                    frag = self._set(els, "slider", L_AMOUNT, "double_array_value", [amount])
                    t, els = await self.run_script(ws, fragment=frag)
                    self.times.append(t)
                    self._check(els, (self.model, amount, 0), expected)
                    self.last_amount = amount
                    k += 1
                    await asyncio.sleep(self.rng.uniform(0.5 * think, 1.5 * think))
            if self.reload_url and self.last_amount is not None:
                await self.reload_elsewhere(expected)
        except Exception as e:
            self.errors.append(f"session {self.idx} ({self.stage}): {type(e).__name__}: {str(e)[:200]}")

    async def reload_elsewhere(self, expected: dict, patience_s: float = 20.0) -> None:
        """F5 against another process: same cookie, a new session there, no widget state and no query string sent;
        its first page must show this session's last configuration, restored from the shared database.

        As a browser, the page's poller is followed: a first page can show the configuration's estimate and measure
        it in the background (on a loaded machine it does), its numbers arriving with a poll. Settings are written
        off the page within ~0.3 s of the last move (coalesced); on a loaded machine later, so a page that shows
        another configuration is loaded again (a new session) for up to ``patience_s`` seconds in all. ``reload_s``:
        how long until the page showed this session's numbers."""
        self.stage = "reloading against another process"
        want = expected[(self.model, self.last_amount, 0)]
        t0 = time.monotonic()
        await asyncio.sleep(1.5)
        while True:
            self.widgets, self.fragment_of, self.query, self.auto = {}, {}, "", {}
            async with self._connect(self.reload_url) as ws:
                _, els = await self.run_script(ws)
                got = {k: els["_metrics"].get(k) for k in want}
                while got != want and self.auto and time.monotonic() - t0 < patience_s:
                    polled = await self._poll(ws)
                    if polled is not None:
                        els = polled
                        got = {k: els["_metrics"].get(k) for k in want}
            if got == want or time.monotonic() - t0 > patience_s:
                break
            await asyncio.sleep(1.0)
        self.reload_checked = True
        self.reload_s = time.monotonic() - t0
        if got != want:
            self.reload_mismatch = (f"session {self.idx} reloaded on {self.reload_url} for {self.reload_s:.0f} s: "
                                    f"saw {got}, expected its last configuration {(self.model, self.last_amount)} "
                                    f"{want}")

    async def _poll(self, ws) -> dict | None:
        """The next poll the server scheduled, as the browser runs it (its fragment, after its interval): the page's
        elements when the poll reran the page (a fragment run draws only itself; the full rerun follows its
        st.rerun), else None."""
        frag, every = next(iter(self.auto.items()))
        await asyncio.sleep(every)
        self.auto.pop(frag, None)
        _, els = await self.run_script(ws, fragment=frag, auto=True)
        return els if els["_metrics"] else None

    async def _train_loop(self, ws, els: dict, deadline: float, think: float, expected: dict) -> None:
        self.stage = "ticking fine-tune"
        frag = self._set(els, "checkbox", L_FINETUNE, "bool_value", True)
        _, els = await self.run_script(ws, fragment=frag)
        frag = self._set(els, "number_input", L_EPOCHS, "int_value", self.train_epochs)
        _, els = await self.run_script(ws, fragment=frag)
        k = 0
        while k == 0 or time.monotonic() < deadline:
            amount = self.train_amounts[(self.idx * 7 + k) % len(self.train_amounts)]
            self.stage = f"training at {amount}"
            frag = self._set(els, "slider", L_AMOUNT, "double_array_value", [amount])
            _, els = await self.run_script(ws, fragment=frag)
            key = (self.model, amount, self.train_epochs)
            t0 = time.perf_counter()
            if els["_ids"].get(("button", L_RUN)) is not None:
                press = self._state(els, "button", L_RUN, "trigger_value", True)
                _, els = await self.run_script(ws, fragment=self.fragment_of.get(press.id), triggers=[press])
            # poll as the browser does: the job panel's fragment at the interval the server asked for
            limit = time.monotonic() + 600
            while {m: els["_metrics"].get(m) for m in WATCHED} != expected[key] and time.monotonic() < limit:
                if self.errors:
                    break
                if self.auto:
                    polled = await self._poll(ws)
                    if polled is None:
                        continue
                    els = polled
                else:  # no fragment scheduled: a full rerun (e.g. the job had finished before this run)
                    await asyncio.sleep(1.0)
                    _, els = await self.run_script(ws)
            self.job_times.append(time.perf_counter() - t0)
            self._check(els, key, expected)
            k += 1
            await asyncio.sleep(self.rng.uniform(0.5 * think, 1.5 * think))


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


def _children_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``'s live child processes (the dashboard's job workers)."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                total += _cpu_s(int(d.name))
        except (OSError, ValueError, IndexError):
            continue
    return total


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * (len(s) - 1)))))]


async def _drive(n: int, trainers: int, ports: list[int], duration: float, think: float, expected: dict,
                 pids: list[int], models: list[str], train_amounts: list[float],
                 train_epochs: int) -> tuple[list, dict]:
    rng = random.Random(0)
    urls = [f"ws://127.0.0.1:{port}/_stcore/stream" for port in ports]
    # several server processes: each session sticks to one of them, as a sticky reverse proxy would place it
    sessions = [Session(i, urls[i % len(urls)], TRAIN_MODEL if i < trainers else models[i % len(models)],
                        random.Random(rng.random()), trainer=i < trainers, train_amounts=train_amounts,
                        train_epochs=train_epochs, reload_url=urls[(i + 1) % len(urls)])
                for i in range(n)]
    mem = {"samples": []}
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            mem["samples"].append(sum(_rss_mb(pid)[0] for pid in pids))
            try:
                await asyncio.wait_for(done.wait(), 1.0)
            except asyncio.TimeoutError:
                pass

    sampler = asyncio.create_task(sample())
    t0 = time.monotonic()
    cpu0, own0 = sum(_cpu_s(p) for p in pids), time.process_time()
    kids0 = sum(_children_cpu_s(p) for p in pids)
    await asyncio.gather(*(s.main(duration, think, expected) for s in sessions))
    mem["wall_s"] = time.monotonic() - t0
    mem["server_cpu_s"], mem["driver_cpu_s"] = sum(_cpu_s(p) for p in pids) - cpu0, time.process_time() - own0
    mem["worker_cpu_s"] = max(0.0, sum(_children_cpu_s(p) for p in pids) - kids0)
    done.set()
    await sampler
    return sessions, mem


def _ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 1)


def _db_label(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(unreadable URL)"


def run(sessions: int = 40, duration: float = 120.0, think: float = 1.5, models: list[str] | None = None,
        trainers: int = 0, server_args: list[str] | None = None, processes: int = 1,
        train_amounts: list[float] | None = None, train_epochs: int = TRAIN_EPOCHS, db_url: str | None = None,
        expected: dict | None = None) -> dict:
    models = list(models or MODELS)
    trainers = max(0, min(trainers, sessions))
    t0 = time.perf_counter()
    train_amounts = list(train_amounts or TRAIN_AMOUNTS)
    trained = train_amounts if trainers else []  # every value a trainer may reach
    if expected is None:
        expected = oracle(sorted(set(models) | ({TRAIN_MODEL} if trainers else set())), trained=trained,
                          epochs=train_epochs)
    oracle_s = time.perf_counter() - t0
    processes = max(1, processes)
    ports = [free_port() for _ in range(processes)]
    reports = [tempfile.mktemp(prefix="workshop_baselines_", suffix=".json") for _ in ports]
    # one database shared by every process: the given URL, else a temporary SQLite file
    db = db_url or tempfile.mktemp(prefix="workshop_history_", suffix=".sqlite3")
    log = tempfile.NamedTemporaryFile(prefix="workshop_server_", suffix=".log", delete=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COMPRESSION_LAB_DB": db}
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.workshop_load", "--serve", str(port), report,
                               *(server_args or [])], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
             for port, report in zip(ports, reports)]
    try:
        for port, proc in zip(ports, procs):
            wait_healthy(port, proc, timeout=180)
        rss_idle = sum(_rss_mb(p.pid)[0] for p in procs)
        clients, mem = asyncio.run(_drive(sessions, trainers, ports, duration, think, expected,
                                          [p.pid for p in procs], models, train_amounts, train_epochs))
        rss_end = sum(_rss_mb(p.pid)[0] for p in procs)
        rss_peak = sum(_rss_mb(p.pid)[1] for p in procs)
        for proc in procs:
            proc.send_signal(signal.SIGUSR1)
        t1 = time.monotonic()
        while not all(os.path.exists(r) for r in reports) and time.monotonic() - t1 < 60:
            time.sleep(0.2)
        checks = [json.loads(Path(r).read_text()) if os.path.exists(r) else {"ok": False, "error": "no report"}
                  for r in reports]
        baselines = next((c for c in checks if not c.get("ok")), checks[0])
    finally:
        for proc in procs:
            stop(proc, timeout=20)
        for p in (*reports, *([] if db_url else [db, db + "-wal", db + "-shm"])):
            if os.path.exists(p):
                os.unlink(p)
    movers = [s for s in clients if not s.trainer]
    times = [t for s in movers for t in s.times]
    jobs = [t for s in clients for t in s.job_times]
    errors = [e for s in clients for e in s.errors]
    mismatches = [m for s in clients for m in s.mismatches]
    unchecked = [f"session {s.idx} never checked a move (stopped at: {s.stage}; "
                 f"{s.errors[0] if s.errors else 'no error recorded'})" for s in clients if s.checked == 0]
    loads = [s.first_load for s in clients if s.first_load is not None]
    reloads = [s for s in movers if s.reload_checked]
    reload_bad = [s.reload_mismatch for s in reloads if s.reload_mismatch]
    server_log = Path(log.name).read_text(errors="replace")
    tracebacks = server_log.count("Traceback")
    os.unlink(log.name)
    runs = sum(s.runs for s in clients)
    return {
        "sessions": sessions, "trainers": trainers, "duration_s": duration, "think_s": think,
        "wall_s": round(mem["wall_s"], 1), "models": models, "server_args": server_args or [],
        "processes": processes, "database": _db_label(db) if db_url else "sqlite (temporary file)",
        "identity_cookies": sum(1 for s in clients if s.cookie),
        "interactions": len(times), "checked": sum(s.checked for s in clients),
        "sessions_checked": sum(1 for s in clients if s.checked), "unchecked": unchecked[:5],
        "errors": len(errors), "error_samples": errors[:5],
        "leaks": len(mismatches), "leak_samples": mismatches[:5],
        "reloads_checked": len(reloads), "reload_mismatches": len(reload_bad), "reload_samples": reload_bad[:5],
        "reload_max_s": round(max(s.reload_s for s in reloads), 1) if reloads else None,
        "baselines_unchanged": bool(baselines.get("ok")),
        "baseline_check": baselines.get("error", "hashes equal" if baselines.get("ok") else "hashes differ"),
        "server_tracebacks": tracebacks,
        "traceback_sample": server_log[server_log.find("Traceback"):][:600] if tracebacks else "",
        "interaction_p50_ms": _ms(statistics.median(times)) if times else None,
        "interaction_p95_ms": _ms(pct(times, 95)), "interaction_max_ms": _ms(max(times)) if times else None,
        "training_jobs": len(jobs), "job_turnaround_p50_s": round(statistics.median(jobs), 1) if jobs else None,
        "job_turnaround_max_s": round(max(jobs), 1) if jobs else None,
        "first_load_p50_ms": _ms(statistics.median(loads)) if loads else None,
        "first_load_max_ms": _ms(max(loads)) if loads else None,
        "script_runs": runs,
        "server_cpu_s": round(mem["server_cpu_s"], 1), "worker_cpu_s": round(mem["worker_cpu_s"], 1),
        "driver_cpu_s": round(mem["driver_cpu_s"], 1),
        "server_cpu_ms_per_run": round(1000 * mem["server_cpu_s"] / max(1, runs), 1),
        "throughput_per_s": round(len(times) / mem["wall_s"], 2) if mem["wall_s"] else None,
        "server_rss_idle_mb": round(rss_idle, 1), "server_rss_end_mb": round(rss_end, 1),
        "server_rss_peak_mb": round(max([rss_peak] + mem["samples"]), 1),
        "oracle_s": round(oracle_s, 1), "cpu_count": os.cpu_count(),
        "ok": (not errors and not mismatches and not unchecked and bool(baselines.get("ok")) and bool(times)
               and tracebacks == 0 and not reload_bad and len(reloads) == len(movers)),
    }


def _text(r: dict) -> str:
    lines = [
        f"workshop load: {r['sessions']} sessions ({r['trainers']} training) x {r['duration_s']:.0f} s on "
        f"{r['processes']} server process(es) on {r['database']} "
        f"({', '.join(r['models'])}; think time ~{r['think_s']} s; {r['cpu_count']} shared cores)",
        f"slider moves        {r['interactions']} by the non-training sessions ({r['throughput_per_s']}/s), "
        f"each checked against the library",
        f"slider move time    p50 {r['interaction_p50_ms']} ms, p95 {r['interaction_p95_ms']} ms, "
        f"max {r['interaction_max_ms']} ms (slider move -> script finished)",
        f"training jobs       {r['training_jobs']} (click -> trained numbers on the page: p50 "
        f"{r['job_turnaround_p50_s']} s, max {r['job_turnaround_max_s']} s)",
        f"server CPU          {r['server_cpu_s']} s for {r['script_runs']} script runs "
        f"({r['server_cpu_ms_per_run']} ms/run); job workers {r['worker_cpu_s']} s; load driver {r['driver_cpu_s']} s",
        f"first page load     p50 {r['first_load_p50_ms']} ms, max {r['first_load_max_ms']} ms",
        f"server RSS          idle {r['server_rss_idle_mb']} MB, end {r['server_rss_end_mb']} MB, "
        f"peak {r['server_rss_peak_mb']} MB",
        f"sessions checked    {r['sessions_checked']}/{r['sessions']} {r['unchecked'] or ''}",
        f"errors              {r['errors']} {r['error_samples'] or ''}",
        f"leaks               {r['leaks']} {r['leak_samples'] or ''}",
        f"reload elsewhere    {r['reloads_checked']} sessions reloaded against another process, "
        f"{r['reload_mismatches']} did not find their configuration {r['reload_samples'] or ''} "
        f"(found after at most {r['reload_max_s']} s) "
        f"({r['identity_cookies']}/{r['sessions']} identity cookies)",
        f"server tracebacks   {r['server_tracebacks']}",
        f"baselines unchanged {r['baselines_unchanged']} ({r['baseline_check']})",
        f"OK                  {r['ok']}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"]:
        _serve(int(argv[1]), argv[2], argv[3:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=40)
    p.add_argument("--duration", type=float, default=120.0, help="seconds each session keeps moving sliders "
                                                                 "(counted from its own page load)")
    p.add_argument("--think", type=float, default=1.5, help="mean seconds a student waits between moves")
    p.add_argument("--trainers", type=int, default=0, help="sessions that run training jobs (on digits-cnn)")
    p.add_argument("--server-arg", action="append", default=[], help="a flag for the dashboard after `--` "
                   "(repeatable), e.g. --server-arg=--job-workers=1")
    p.add_argument("--processes", type=int, default=1, help="dashboard processes sharing one history database; each "
                   "session sticks to one (what a sticky reverse proxy in front of them would do)")
    p.add_argument("--db", default=None, help="the database the processes share (SQLAlchemy URL, e.g. "
                   "postgresql+psycopg://user@host/db); default: a temporary SQLite file")
    p.add_argument("--compare-one", action="store_true", help="first run the same load on ONE process (same "
                   "database), then on --processes, and report both and the ratio of slider moves")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if not 1 <= a.sessions <= 200 or a.duration <= 0 or not 0 <= a.trainers <= a.sessions or not 1 <= a.processes <= 8:
        p.error("--sessions must be 1..200, --duration > 0, --trainers 0..sessions and --processes 1..8")
    kw = dict(trainers=a.trainers, server_args=a.server_arg, db_url=a.db)
    if not a.compare_one:
        r = run(a.sessions, a.duration, a.think, processes=a.processes, **kw)
        print(json.dumps(r, indent=2) if a.json else _text(r))
        return 0 if r["ok"] else 1
    expected = oracle(sorted(set(MODELS) | ({TRAIN_MODEL} if a.trainers else set())),
                      trained=TRAIN_AMOUNTS if a.trainers else [])
    one = run(a.sessions, a.duration, a.think, processes=1, expected=expected, **kw)
    many = run(a.sessions, a.duration, a.think, processes=a.processes, expected=expected, **kw)
    ratio = round(many["interactions"] / one["interactions"], 2) if one["interactions"] else None
    both = {"one_process": one, f"{a.processes}_processes": many, "moves_ratio": ratio,
            "ok": one["ok"] and many["ok"]}
    print(json.dumps(both, indent=2) if a.json else
          f"{_text(one)}\n\n{_text(many)}\n\nslider moves, {a.processes} processes / one: {ratio}x")
    return 0 if both["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
