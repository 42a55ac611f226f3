"""Fuzzing: hypothesis over recipes (text and structured), bundles (random, truncated, bit-flipped) and CLI arguments.

``python -m benchmarks.fuzz [--cases N] [--subprocess K] [--no-dashboard] [--json]``

The contract checked on every case: the library returns (or the CLI exits 0), or it raises ONE
``CompressionError`` line (the CLI prints one ``error: ...`` line on stderr and exits 2). Anything else (another
exception type, a traceback, a multi-line message, another exit code) is a failure. Cases are split over four
targets; every failure is recorded (not just the first), deduplicated by exception type and message head.
``--subprocess K`` also runs K of the CLI cases as real ``python -m compression_core`` processes and checks their
exit code and stderr (no "Traceback"). The same strategies drive the fast CI test (``tests/test_fuzz.py``).

Bounded work: every case is timed (the slowest one is reported per target), and a fixed set of hostile inputs
(``hostile_cases``: a 342-byte YAML alias bomb that expands to ~387 million items, 1 MB of nested brackets, deep
nesting and huge node counts under the size cap, giant integers and keys, single-line texts) goes through
``load_recipe`` and ``validate FILE``; each must be answered in one line within ``--budget`` seconds (default 1.0)
with the process's resident memory growing by at most ``--rss-budget`` MB (default 100) over all of them.

The dashboard's trust boundary (``dashboard_corpus``, ``run_dashboard_hostile``): a hostile student's model
references (``os:abort``, ``os:getpid``, ``builtins:exit``, ``subprocess:run``, absolute and ``../`` paths to files on
the server, packages that print or exit on import, another function in a listed workload file, ...) and recipe uploads
carrying them (plus oversize, stale and path-shaped uploads) go through the validator (``dashboard/trust.py``), the job
runner's ``submit`` and the Recipe page (AppTest); each must be refused in one line within ``--budget`` while an audit
hook and a profile hook see no import, exec, process, watched call or file opened under the corpus, and the server
still reproduces a listed recipe afterwards. A positive control (the same references with ``--trust-uploads``) shows
the hooks do see them when they run.

Latency timing inside fuzzed ``measure``/``apply`` runs uses a tiny ``min_run_time`` (numbers are not the point).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent
GOOD_RECIPE = {"version": 1, "model": "digits-mlp", "seed": 0,
               "steps": [{"kind": "prune_unstructured", "amount": 0.5}]}
MODEL_NAMES_PLUS = ["digits-mlp", "digits-cnn", "digits-vit", "digits-lstm", "mnist-lenet300", "mnist-cnn",
                    "", "DIGITS-MLP", "nope", "../etc/passwd"]


class ContractViolation(AssertionError):
    """The code under test broke the one-line-error contract."""


_LOL = ",".join(['"lol"'] * 9)
ALIAS_BOMB = "".join(  # 342 bytes; 9 levels of 9 aliases each: 9**9 = 387,420,489 items once expanded
    [f"a: &a [{_LOL}]\n"] + [f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")])


def hostile_cases() -> dict[str, str]:
    """Inputs built to make a parser do unbounded work or build unbounded messages: name -> recipe text."""
    body = yaml.safe_dump(GOOD_RECIPE, sort_keys=False)
    return {
        "alias bomb (342 B, ~387 M items)": ALIAS_BOMB,
        "alias bomb inside a good recipe": body + "extra: " + ALIAS_BOMB.replace("\n", "\n  "),
        "1 MB of nested brackets": "model: digits-mlp\nsteps: " + "[" * 500_000 + "]" * 500_000 + "\n",
        "1 MB nested mappings": "a:\n" + "".join(" " * (i % 400 + 1) + "a:\n" for i in range(5000))[:1_000_000],
        "nesting under the size cap": "model: digits-mlp\nsteps: " + "[" * 100_000 + "]" * 100_000 + "\n",
        "deep block mappings": "a:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(600)),
        "many nodes under the size cap": "model: digits-mlp\nsteps: [" + ",".join(["1"] * 60_000) + "]\n",
        "many keys": "model: digits-mlp\n" + "".join(f"k{i}: {i}\n" for i in range(20_000)),
        "giant integer": "version: " + "9" * 200_000 + "\nmodel: digits-mlp\n",
        "giant float": "version: 1\nseed: 1" + "0" * 200_000 + ".5\nmodel: digits-mlp\n",
        "giant key": "version: 1\n" + "k" * 200_000 + ": 1\n",
        "giant string value": "version: 1\nmodel: " + "m" * 200_000 + "\n",
        "single line of 200 KB": "{" + "a" * 200_000,
        "single-line JSON nesting": "{\"a\":" * 50_000 + "1" + "}" * 50_000,
        "single-line bracket nesting": "[" * 100_000 + "]" * 100_000,
        "many documents": "---\n" * 60_000,
        "anchors everywhere": "".join(f"k{i}: &a{i} 1\n" for i in range(10_000)),
        "merge keys": "base: &b {amount: 0.5}\n" + "".join(f"s{i}: {{<<: *b}}\n" for i in range(5_000)),
        "tags": "version: !!python/object/apply:os.system ['true']\n",
        "unicode soup": "model: " + "\U0001F600\u202e\x00\ud800" * 20_000 + "\n",
    }


def _rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB."""
    vals = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                vals[line.split(":")[0]] = int(line.split()[1]) / 1024
    except OSError:  # pragma: no cover  (not Linux)
        pass
    return vals.get("VmRSS", 0.0), vals.get("VmHWM", 0.0)


# ------------------------------------------------------------------------------------------- strategies
def _scalars() -> st.SearchStrategy:
    return st.one_of(
        st.none(), st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0, 1, -1, 0.5, 0.99, 1.0, 1.5, 2, 4, 8, 16, 32, 1e308, -0.0, "0.5", "8", "re:fc.*",
                         "re:(", "fc1", "conv1", "blocks.0", "head", "global", "layer", "int8", "fp16"]),
        st.text(max_size=20),
    )


def _values(depth: int = 2) -> st.SearchStrategy:
    return st.recursive(_scalars(), lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=8)


def _field_names() -> list[str]:
    from compression_core.recipe import step_kinds

    names = set()
    for cls in step_kinds().values():
        names.update(cls.model_fields)
    return sorted(names)


@st.composite
def recipe_steps(draw) -> dict:
    """A step: a real or fake kind with real field names (and some junk) and wild values."""
    from compression_core.recipe import step_kinds

    kinds = sorted(step_kinds())
    kind = draw(st.one_of(st.sampled_from(kinds), st.text(max_size=12), _scalars()))
    fields = _field_names()
    step = {"kind": kind} if draw(st.booleans()) or True else {}
    for name in draw(st.lists(st.sampled_from(fields + ["bogus", ""]), max_size=4, unique=True)):
        step[name] = draw(_values())
    if draw(st.integers(0, 9)) == 0:
        del step["kind"]
    return step


@st.composite
def recipe_dicts(draw) -> object:
    """Structured recipes: mostly recipe-shaped mappings with some wrong parts, sometimes not a mapping at all."""
    if draw(st.integers(0, 9)) == 0:
        return draw(_values())
    d: dict = {}
    if draw(st.integers(0, 5)):
        d["version"] = draw(st.one_of(st.just(1), _scalars()))
    if draw(st.integers(0, 7)):
        d["model"] = draw(st.one_of(st.sampled_from(MODEL_NAMES_PLUS), _scalars()))
    if draw(st.booleans()):
        d["seed"] = draw(_scalars())
    if draw(st.integers(0, 5)):
        d["steps"] = draw(st.one_of(st.lists(recipe_steps(), max_size=3), _values()))
    for key in draw(st.lists(st.sampled_from(["name", "description", "extra", "Steps"]), max_size=2, unique=True)):
        d[key] = draw(_values())
    return d


@st.composite
def recipe_texts(draw) -> str:
    """Recipe text: random text, YAML/JSON dumps of structured recipes, and mutated dumps of a good recipe."""
    how = draw(st.integers(0, 4))
    if how == 0:
        return draw(st.text(max_size=300))
    if how == 1:
        obj = draw(recipe_dicts())
        try:
            return yaml.safe_dump(obj, allow_unicode=True) if draw(st.booleans()) else json.dumps(obj)
        except (ValueError, TypeError, yaml.YAMLError):
            return repr(obj)
    base = yaml.safe_dump(GOOD_RECIPE, sort_keys=False)
    if how == 2:  # splice random text into a good recipe
        i = draw(st.integers(0, len(base)))
        j = draw(st.integers(i, len(base)))
        return base[:i] + draw(st.text(max_size=40)) + base[j:]
    if how == 3:  # YAML features: tags, anchors, aliases, flows, documents
        snippet = draw(st.sampled_from([
            "!!python/object/apply:os.system ['true']", "!!python/name:os.system", "&a [*a]", "*undefined",
            "{a: 1, a: 2}", "[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]", "!!binary aGVsbG8=", "!!set {a, b}",
            "2001-12-14t21:59:43.10-05:00", "0x1F", ".nan", "-.inf", "~", "'\\x00'", "\"\\ud800\"", "---\n---",
            "? complex key\n: value", "!!float '1e400'", "!!int '99999999999999999999999999'",
        ]))
        field = draw(st.sampled_from(["model", "seed", "steps", "version", "amount"]))
        return base.replace(f"{field}:", f"{field}: {snippet} #", 1) if field != "amount" else \
            base.replace("amount: 0.5", f"amount: {snippet}")
    return "---\n" + base + "---\n" + draw(st.text(max_size=100))  # Markdown lesson with front matter


@st.composite
def bundle_blobs(draw, base: bytes) -> bytes:
    """Bytes of a bundle file: truncated, bit-flipped, spliced, or random."""
    how = draw(st.integers(0, 4))
    if how == 0:
        return draw(st.binary(max_size=2048))
    if how == 1:
        return base[: draw(st.integers(0, len(base) - 1))]
    data = bytearray(base)
    if how == 2:
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if how == 3:
        i = draw(st.integers(0, len(data) - 1))
        chunk = draw(st.binary(min_size=1, max_size=64))
        data[i: i + len(chunk)] = chunk
        return bytes(data)
    # the header intact, the pickle inside damaged: flip bytes only in the data.pkl member
    start = base.find(b"data.pkl")
    start = max(start, 0) + 40
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(start, min(len(data) - 1, start + 600)))
        data[i] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def cli_argvs(draw, files: dict[str, str]) -> list[str]:
    """CLI argument lists: a (sub)command, then flags and values from a pool of real and hostile tokens."""
    paths = list(files.values()) + ["/nonexistent/x.yaml", "", "-", "/", "/dev/null", "a" * 300, "\x00"]
    cmd = draw(st.sampled_from(["models", "measure", "apply", "validate", "schema", "export", "bogus", "", "-h",
                                "--json"]))
    argv = [cmd] if draw(st.integers(0, 19)) else []
    pool = st.one_of(
        st.sampled_from(["--json", "--model", "--batch-size", "--threads", "--bundle", "--runtime", "--save-model",
                         "--no-latency", "--onnx", "--int8", "--external-data", "--", "-x", "--model=digits-mlp",
                         "--batch-size=0", "--threads=-3", "--bundle=", "--runtime=torch", "--int8=dynamic"]),
        st.sampled_from(paths),
        st.sampled_from(["digits-mlp", "digits-cnn", "nope", "0", "-1", "1", "4097", "99999999999999999999",
                         "1e3", "nan", "torch", "static", "none", "\u00e9", "--help"]),
        st.text(max_size=12),
    )
    argv += draw(st.lists(pool, max_size=6))
    return argv


# ------------------------------------------------------------------------------------------- checks
def _one_line(msg: str, what: str) -> None:
    if not msg or "\n" in msg or "Traceback" in msg:
        raise ContractViolation(f"{what}: not one line: {msg[:300]!r}")


def check_recipe(source) -> str:
    """``load_recipe`` on text or data: 'ok' or 'error' (one CompressionError line); else ContractViolation."""
    from compression_core import CompressionError
    from compression_core.recipe import load_recipe

    try:
        load_recipe(source)
        return "ok"
    except CompressionError as e:
        _one_line(str(e), "load_recipe")
        return "error"
    except Exception as e:
        raise ContractViolation(f"load_recipe raised {type(e).__name__}: {str(e)[:300]}") from e


def check_bundle(data: bytes, folder: str) -> str:
    """``load_bundle`` on a file holding ``data``: 'ok' or 'error' (one line); else ContractViolation."""
    from compression_core import CompressionError
    from compression_core.bundle import load_bundle

    fd, path = tempfile.mkstemp(suffix=".bundle.pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        load_bundle(path)
        return "ok"
    except CompressionError as e:
        _one_line(str(e), "load_bundle")
        return "error"
    except Exception as e:
        raise ContractViolation(f"load_bundle raised {type(e).__name__}: {str(e)[:300]}") from e
    finally:
        os.unlink(path)


def check_cli(argv: list[str]) -> str:
    """``cli.main(argv)`` in process: exit 0, or exit 2 with exactly one ``error: ...`` line on stderr."""
    from compression_core import cli

    err, out = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = cli.main(argv)
    except SystemExit as e:  # argparse's --help prints help and exits 0
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if code != 0:
            raise ContractViolation(f"cli {argv!r}: SystemExit({e.code!r})") from None
        return "ok"
    except Exception as e:
        raise ContractViolation(f"cli {argv!r} raised {type(e).__name__}: {str(e)[:300]}") from e
    text = err.getvalue()
    if code == 0:
        return "ok"
    if code != 2:
        raise ContractViolation(f"cli {argv!r}: exit {code}")
    if not text.startswith("error: ") or text.count("\n") != 1:
        raise ContractViolation(f"cli {argv!r}: stderr is not one error line: {text[:300]!r}")
    return "error"


def check_cli_subprocess(argv: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-m", "compression_core", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if "Traceback" in proc.stderr or proc.returncode not in (0, 2):
        raise ContractViolation(f"subprocess {argv!r}: exit {proc.returncode}: {proc.stderr[-300:]!r}")
    if proc.returncode == 2 and proc.stderr.count("\n") != 1:
        raise ContractViolation(f"subprocess {argv!r}: stderr is not one line: {proc.stderr[:300]!r}")
    return "ok" if proc.returncode == 0 else "error"


# ------------------------------------------------------------------------------------------- fixtures
def make_files(folder: str) -> tuple[dict[str, str], bytes]:
    """Files the CLI fuzz points at (a good recipe, bad ones, a good bundle, damaged and malicious bundles)."""
    import torch

    import sample_models
    from compression_core.bundle import bundle_bytes
    from compression_core.recipe import apply_recipe, load_recipe

    f = Path(folder)
    recipe = load_recipe(GOOD_RECIPE)
    base = bundle_bytes(recipe, apply_recipe(recipe, with_latency=False, measure_before=False,
                                             measure_after=False).model)
    files = {
        "good.yaml": yaml.safe_dump(GOOD_RECIPE), "good.json": json.dumps(GOOD_RECIPE),
        "bad.yaml": "version: 1\nmodel: digits-mlp\nsteps: [\n", "range.yaml": yaml.safe_dump(
            {**GOOD_RECIPE, "steps": [{"kind": "prune_unstructured", "amount": 1.5}]}),
        "evil.yaml": "steps: !!python/object/apply:os.system ['true']\n", "empty.yaml": "",
        "notes.txt": "hello", "lesson.md": "---\n" + yaml.safe_dump(GOOD_RECIPE) + "---\n# lesson\n",
    }
    out = {}
    for name, text in files.items():
        (f / name).write_text(text)
        out[name] = str(f / name)
    (f / "good.bundle.pt").write_bytes(base)
    (f / "trunc.bundle.pt").write_bytes(base[: len(base) // 2])
    (f / "random.bundle.pt").write_bytes(random.Random(0).randbytes(4096))
    torch.save({"format": "compression-lab-bundle", "format_version": 1, "recipe": "{}",
                "state_dict": {"m": torch.nn.Linear(2, 2)}}, f / "module.bundle.pt")
    (f / "adir").mkdir(exist_ok=True)
    for name in ("good.bundle.pt", "trunc.bundle.pt", "random.bundle.pt", "module.bundle.pt", "adir"):
        out[name] = str(f / name)
    out["out.bundle.pt"] = str(f / "out" / "saved.bundle.pt")
    out["out.onnx"] = str(f / "out" / "model.onnx")
    sample_models.load("digits-mlp")  # warm the caches outside the timed cases
    return out, base


@contextlib.contextmanager
def quick_latency():
    """Time latency with a tiny ``min_run_time`` while fuzzing (numbers are not the point; argument handling is)."""
    import importlib

    m = importlib.import_module("compression_core.measure")

    real = m.latency

    def fast(model, example, threads=1, min_run_time=0.2, **kw):
        return real(model, example, threads=threads, min_run_time=0.001, **kw)

    m.latency = fast
    try:
        yield
    finally:
        m.latency = real


# ------------------------------------------------------------------------------------------- runner
def _collect(fn, strategy, n: int, record: dict, seed: int) -> None:
    """Run ``fn`` on ``n`` hypothesis examples, recording every outcome and every violation (no early stop)."""

    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def case(value):
        record["cases"] += 1
        t0 = time.perf_counter()
        try:
            record[fn(value)] += 1
        except ContractViolation as e:
            record["failures"].append(str(e)[:400])
        took = time.perf_counter() - t0
        if took > record.get("max_case_s", 0.0):
            record["max_case_s"] = round(took, 3)
            record["slowest_case"] = repr(value)[:120]

    import hypothesis

    hypothesis.seed(seed)(case)()


def run_hostile(folder: str, budget_s: float = 1.0, rss_budget_mb: float = 100.0) -> dict:
    """Each hostile input through ``load_recipe`` (text) and ``validate FILE`` (CLI, in process): one line, within
    ``budget_s`` each; resident memory may grow by at most ``rss_budget_mb`` over all of them."""
    good = Path(folder) / "warm.yaml"
    good.write_text(yaml.safe_dump(GOOD_RECIPE))
    check_recipe(yaml.safe_dump(GOOD_RECIPE))  # imports and first-call caches outside the measurement
    check_cli(["validate", str(good)])
    rss0, hwm0 = _rss_mb()
    record: dict = {"cases": 0, "ok": 0, "error": 0, "failures": [], "timings": {}}
    t_all = time.perf_counter()
    for name, text in hostile_cases().items():
        path = Path(folder) / "hostile.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        for via, call in (("load_recipe", lambda: check_recipe(text)), ("validate", lambda: check_cli(
                ["validate", str(path)]))):
            record["cases"] += 1
            t0 = time.perf_counter()
            try:
                outcome = call()
                record[outcome] += 1
            except ContractViolation as e:
                outcome = "violation"
                record["failures"].append(f"{name} via {via}: {str(e)[:300]}")
            took = time.perf_counter() - t0
            record["timings"][f"{name} via {via}"] = round(took, 3)
            if took > budget_s:
                record["failures"].append(f"{name} via {via}: took {took:.2f} s (budget {budget_s:g} s)")
    rss1, hwm1 = _rss_mb()
    record["rss_growth_mb"] = round(max(rss1 - rss0, hwm1 - hwm0), 1)
    if record["rss_growth_mb"] > rss_budget_mb:
        record["failures"].append(f"resident memory grew by {record['rss_growth_mb']} MB (budget {rss_budget_mb:g} MB)")
    slow = max(record["timings"].items(), key=lambda kv: kv[1])
    record["max_case_s"], record["slowest_case"] = slow[1], slow[0]
    record["seconds"] = round(time.perf_counter() - t_all, 1)
    return record


# ------------------------------------------------------------------------------- the dashboard's trust boundary
# A hostile student's inputs to a class server: model references that name stdlib functions, files on the server,
# packages that print or exit on import, a model the server does not list, and recipe uploads carrying them (plus
# oversize, stale and path-shaped uploads). Each must be answered in ONE line with nothing imported or called: an
# audit hook (``sys.addaudithook``: imports, exec of code, processes, signals, files opened under the corpus) and a
# profile hook (calls into the library's workload resolution, and os.abort/os.getpid/os.system/exit-like calls made
# from the library or the dashboard) record everything while the corpus runs. Audit hooks cannot be removed: the hook
# is a no-op unless ``_AUDIT_ON`` is set (by ``audited()``).
APP_DIR = str(ROOT / "dashboard")
_AUDIT_ON = False
_AUDIT_HOOKED = False
_AUDIT_PATHS: tuple[str, ...] = ()
_AUDIT_EVENTS: list[tuple[str, str]] = []
AUDITED_EVENTS = frozenset({"import", "exec", "open", "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn",
                            "os.spawn", "os.fork", "os.forkpty", "os.kill", "os.killpg", "ctypes.dlopen",
                            "os.startfile", "pty.spawn"})
_WATCH_CODES: dict = {}  # code object -> name: Python functions that must not run while the corpus does
_WATCH_C: dict = {}  # builtin -> name: C functions that must not be called from the library or the dashboard
_WATCH_DIRS = (str(ROOT / "compression_core"), APP_DIR)


def _audit_hook(event: str, args: tuple) -> None:
    if not _AUDIT_ON or event not in AUDITED_EVENTS:
        return
    try:  # an exception here would surface in the audited operation: never raise
        if event == "exec":
            filename = getattr(args[0], "co_filename", "") if args else ""
            if filename.startswith(APP_DIR):  # AppTest re-running the app's own page scripts
                return
            what = filename or repr(args)[:120]
        elif event == "open":
            path = os.fsdecode(args[0]) if isinstance(args[0], (str, bytes)) else ""
            if not _AUDIT_PATHS or not path.startswith(_AUDIT_PATHS):
                return
            what = path
        elif event == "import":
            what = str(args[0])
        else:
            what = repr(args)[:160]
        _AUDIT_EVENTS.append((event, what))
    except Exception:  # pragma: no cover
        pass


def _profile(frame, event: str, arg) -> None:
    if not _AUDIT_ON:
        return
    try:
        if event == "call":
            name = _WATCH_CODES.get(frame.f_code)
            if name is not None:
                caller = frame.f_back.f_code.co_filename if frame.f_back is not None else ""
                if name.startswith("compression_core.") or caller.startswith(_WATCH_DIRS):
                    _AUDIT_EVENTS.append(("call", name))
        elif event == "c_call" and arg in _WATCH_C and frame.f_code.co_filename.startswith(_WATCH_DIRS):
            _AUDIT_EVENTS.append(("call", _WATCH_C[arg]))
    except Exception:  # pragma: no cover  (an unhashable callable, ...)
        pass


def _install_audit() -> None:
    global _AUDIT_HOOKED
    if _AUDIT_HOOKED:
        return
    import _sitebuiltins
    import importlib
    import importlib.util
    import shutil

    from compression_core import workload as W

    for fn in (W.resolve_workload, W._load_attr, W._build, W._check_forward):
        _WATCH_CODES[fn.__code__] = f"compression_core.workload.{fn.__name__}"
    for name, fn in (("importlib.import_module", importlib.import_module),
                     ("importlib.util.spec_from_file_location", importlib.util.spec_from_file_location),
                     ("subprocess.run", subprocess.run), ("subprocess.Popen", subprocess.Popen.__init__),
                     ("builtins.exit", _sitebuiltins.Quitter.__call__), ("shutil.rmtree", shutil.rmtree)):
        _WATCH_CODES[fn.__code__] = name
    for name in ("abort", "_exit", "getpid", "system", "kill", "fork", "execv", "execve"):
        if hasattr(os, name):
            _WATCH_C[getattr(os, name)] = f"os.{name}"
    _WATCH_C[sys.exit] = "sys.exit"
    _WATCH_C[eval] = "builtins.eval"
    _WATCH_C[exec] = "builtins.exec"
    sys.addaudithook(_audit_hook)
    _AUDIT_HOOKED = True


@contextlib.contextmanager
def audited(paths=()):
    """Record imports, exec, processes, signals, opens under ``paths`` and watched calls until the block ends; the
    list yielded is filled with ``(event, what)`` pairs when it does."""
    global _AUDIT_ON, _AUDIT_PATHS
    import threading

    _install_audit()
    seen: list[tuple[str, str]] = []
    _AUDIT_EVENTS.clear()
    _AUDIT_PATHS = tuple(str(p) for p in paths)
    sys.setprofile(_profile)
    threading.setprofile(_profile)  # AppTest runs each page run in a new thread
    _AUDIT_ON = True
    try:
        yield seen
    finally:
        _AUDIT_ON = False
        sys.setprofile(None)
        threading.setprofile(None)
        seen.extend(_AUDIT_EVENTS)
        _AUDIT_EVENTS.clear()


_LISTED_WORKLOAD = '''"""A workload the teacher named with --workload; ``other`` is NOT listed (a student names it)."""
import pathlib

import torch

from compression_core import Workload

MARKERS = pathlib.Path({markers!r})


def workload():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] > 0).long()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    return Workload(name="class-listed", model=model.eval(), train=(x[:64], y[:64]), test=(x[64:], y[64:]))


def other():
    (MARKERS / "listed_workload.other called").write_text("x")
    return workload()
'''
_EVIL_WORKLOAD = '''import pathlib
MARKERS = pathlib.Path({markers!r})
(MARKERS / "{name} imported").write_text("x")
print("{name}: imported on the server")


def workload():
    (MARKERS / "{name} called").write_text("x")
'''
_EXITING = _EVIL_WORKLOAD + "\nimport sys\nsys.exit(3)\n"


def dashboard_corpus(folder: str) -> dict:
    """Write the corpus's files into ``folder`` and return it: ``argv`` (the class server's own flags: one listed
    ``--workload``), ``pkgs`` (a folder to put on ``sys.path``: the packages that print or exit on import),
    ``markers`` (a folder the hostile code writes into when imported or called: must stay empty), ``references``
    (name -> reference), ``odd`` (name -> a non-string ``model``), ``uploads`` (name -> bytes of an uploaded file),
    ``listed`` (name -> a reference the server lists) and ``paths`` (where no file may be opened)."""
    from compression_core.recipe import MAX_RECIPE_BYTES

    root = Path(folder).resolve()
    markers, pkgs = root / "markers", root / "pkgs"
    markers.mkdir(parents=True, exist_ok=True)
    for pkg, body in (("cl_hostile_loud", _EVIL_WORKLOAD), ("cl_hostile_exit", _EXITING)):
        (pkgs / pkg).mkdir(parents=True, exist_ok=True)
        (pkgs / pkg / "__init__.py").write_text(body.format(markers=str(markers), name=pkg))
    evil = root / "evil_workload.py"
    evil.write_text(_EVIL_WORKLOAD.format(markers=str(markers), name="evil_workload"))
    listed = root / "class" / "listed_workload.py"
    listed.parent.mkdir(exist_ok=True)
    listed.write_text(_LISTED_WORKLOAD.format(markers=str(markers)))
    on_disk = root / "server_recipe.yaml"
    on_disk.write_text(f"version: 1\nmodel: {evil}:workload\nseed: 0\nsteps: []\n")
    rel = os.path.relpath(evil, os.getcwd())
    rel = rel if rel.startswith("..") else "../" + Path(os.getcwd()).name + "/" + rel
    refs = {
        "os:abort (kills the server)": "os:abort",
        "os:getpid (called)": "os:getpid",
        "os:system": "os:system",
        "os:_exit": "os:_exit",
        "builtins:exit": "builtins:exit",
        "builtins:eval": "builtins:eval",
        "subprocess:run": "subprocess:run",
        "sys:exit": "sys:exit",
        "shutil:rmtree": "shutil:rmtree",
        "absolute path to a file on the server": f"{evil}:workload",
        "../ path to a file on the server": f"{rel}:workload",
        "../ path out of the server's folder": "../../../../../../../../etc/passwd:x",
        "home folder path": "~/workload.py:workload",
        "package that prints on import": "cl_hostile_loud:workload",
        "package that exits on import": "cl_hostile_exit:workload",
        "another function in a listed file": f"{listed}:other",
        "another function in a listed file, relative": f"{os.path.relpath(listed, os.getcwd())}:other",
        "a library function that is not a factory": "sample_models:workload",
        "the library's registry": "compression_core.workload:register_workload",
        "the dashboard's own job code": "jobs.tasks:run_allocate",
        "the validator itself": "trust:check_model_reference",
        "a listed name with a newline": "digits-mlp\nos:abort",
        "a listed name with a NUL": "digits-mlp\x00",
        "a listed name in capitals": "DIGITS-MLP",
        "stale: another server's --workload": "/srv/last-term/class_model.py:workload",
        "10 KB reference": "os:" + "a" * 10_000,
        "empty": "",
        "blank": "   ",
    }
    odd = {"no model (None)": None, "a number": 5, "a list": ["os", "abort"], "a mapping": {"module": "os"}}
    stale = refs["stale: another server's --workload"]
    uploads = {f"recipe naming {name}": f"version: 1\nmodel: {json.dumps(ref)}\nseed: 0\nsteps: []\n".encode()
               for name, ref in refs.items()}
    uploads.update({
        "the issue's 3-line upload (os:abort)": b"version: 1\nmodel: os:abort\nsteps: []\n",
        "one line, no newline": b"model: os:abort",
        "JSON": json.dumps({"version": 1, "model": "os:getpid", "seed": 0, "steps": []}).encode(),
        "Markdown front matter": b"---\nversion: 1\nmodel: subprocess:run\nsteps: []\n---\n# my recipe\n",
        "model as a Python tag": b"version: 1\nmodel: !!python/name:os.abort ''\nsteps: []\n",
        "model as a list": b"version: 1\nmodel: [os, abort]\nsteps: []\n",
        "model as a mapping": b"version: 1\nmodel: {module: os, attr: abort}\nsteps: []\n",
        "a foreign model and a bad step": b"version: 1\nmodel: os:abort\nsteps: [{kind: bogus}]\n",
        "oversize (over the recipe cap)": b"version: 1\nmodel: os:abort\nsteps: []\n" + b"#" * (MAX_RECIPE_BYTES + 10),
        "stale: version 0": b"version: 0\nmodel: os:abort\nsteps: []\n",
        "stale: exported by last term's server": f"version: 1\nmodel: {json.dumps(stale)}\nseed: 0\nsteps:\n"
                                                 "- kind: prune_unstructured\n  amount: 0.5\n".encode(),
        "a path to a recipe on the server": str(on_disk).encode(),
        "a ../ path to a recipe on the server": os.path.relpath(on_disk, os.getcwd()).encode(),
        "a path to a system file": b"/etc/passwd",
        "not UTF-8": b"\xff\xfe\x00m\x00o\x00d\x00e\x00l",
        "empty file": b"",
    })
    return {"argv": ["--workload", f"{listed}:workload"], "pkgs": str(pkgs), "markers": str(markers),
            "references": refs, "odd": odd, "uploads": uploads,
            "listed": {"a registered name": "digits-mlp", "the listed --workload": f"{listed}:workload"},
            "paths": (str(root), "/etc/passwd", "/srv/last-term", os.path.expanduser("~/workload.py"))}


def _refused_line(fn, *args) -> str:
    """``fn(*args)`` must raise one line (a refusal); returns it. Anything else is a ContractViolation."""
    try:
        fn(*args)
    except Exception as e:
        msg = " ".join(str(e).split()) if type(e).__name__ == "JobRefused" else str(e)
        _one_line(msg, getattr(fn, "__name__", "check"))
        return msg
    raise ContractViolation(f"{getattr(fn, '__name__', 'check')}: accepted {str(args)[:120]}")


def run_dashboard_hostile(folder: str, page: bool = True, budget_s: float | None = 1.0,
                          rss_budget_mb: float | None = 100.0) -> dict:
    """The corpus through the dashboard's validator (``trust``: every reference, non-string model and upload), the
    job runner's ``submit`` (as ``sensitivity`` and ``recipe`` payloads) and, with ``page``, the Recipe page's upload
    (``streamlit.testing.v1.AppTest``), all under ``audited()``: each case one line, refused; no import, exec, process,
    watched call or open under the corpus's paths; the hostile files' markers absent; then the server still answers (a
    listed model's recipe is reproduced on the same page). ``budget_s``/``rss_budget_mb`` None: not checked."""
    corpus = dashboard_corpus(folder)
    old_argv, old_path = list(sys.argv), list(sys.path)
    sys.argv = [sys.argv[0] if sys.argv else "app.py", *corpus["argv"]]
    for p in (corpus["pkgs"], APP_DIR, str(ROOT)):
        if p not in sys.path:
            sys.path.insert(0, p)
    record: dict = {"cases": 0, "refused": 0, "failures": [], "timings": {}, "events": [], "channels": {}}
    runner = None
    try:
        import jobs
        import trust

        good = "version: 1\nmodel: digits-mlp\nseed: 0\nsteps:\n- kind: prune_unstructured\n  amount: 0.5\n"
        listed_recipe = f"version: 1\nmodel: {json.dumps(corpus['listed']['the listed --workload'])}\nseed: 0\n" \
                        "steps:\n- kind: prune_unstructured\n  amount: 0.5\n"
        for ref in corpus["listed"].values():  # first calls (plugins, caches) outside the audit
            trust.check_model_reference(ref)
        trust.check_recipe(good)
        _refused_line(trust.check_recipe, "version: 1\nmodel: digits-mlp\nsteps: [{kind: bogus}]\n")
        runner = jobs.JobRunner(jobs.Limits(workers=1, warm=False))
        at = None
        if page:
            from streamlit.testing.v1 import AppTest

            at = AppTest.from_file(str(ROOT / "dashboard" / "pages" / "recipe.py"), default_timeout=300)
            at.run()
            for name, body in (("bad.yaml", b"version: 1\nmodel: digits-mlp\nsteps: [{kind: bogus}]\n"),
                               ("warm.yaml", b"version: 1\nmodel: os:abort\nsteps: []\n")):
                at.file_uploader(key="r_upload").set_value((name, body, "application/x-yaml")).run()
        channels: list[tuple[str, str, object]] = []
        for name, ref in corpus["references"].items():
            channels.append(("validator", name, lambda ref=ref: _refused_line(trust.check_model_reference, ref)))
            channels.append(("jobs", name, lambda ref=ref: _refused_line(
                runner.submit, "sensitivity", {"model": ref, "technique": "prune"}, "hostile")))
        for name, ref in corpus["odd"].items():
            channels.append(("validator", name, lambda ref=ref: _refused_line(trust.check_model_reference, ref)))
            channels.append(("jobs", name, lambda ref=ref: _refused_line(
                runner.submit, "recipe", {"recipe": {"version": 1, "model": ref, "steps": []}}, "hostile")))
        for name, body in corpus["uploads"].items():
            channels.append(("validator", name, lambda body=body: _refused_line(trust.check_recipe, body)))
            text = body.decode("utf-8", "replace")
            channels.append(("jobs", name, lambda text=text: _refused_line(
                runner.submit, "recipe", {"recipe": text}, "hostile")))
            if at is not None:
                channels.append(("recipe page", name, lambda name=name, body=body: _page_line(at, name, body)))
        rss0, hwm0 = _rss_mb()
        with audited(corpus["paths"]) as seen:
            for channel, name, call in channels:
                rec = record["channels"].setdefault(channel, {"cases": 0, "refused": 0, "failures": 0,
                                                              "max_case_s": 0.0})
                record["cases"] += 1
                rec["cases"] += 1
                t0 = time.perf_counter()
                try:
                    call()
                    record["refused"] += 1
                    rec["refused"] += 1
                except ContractViolation as e:
                    record["failures"].append(f"{channel}: {name}: {str(e)[:300]}")
                    rec["failures"] += 1
                took = time.perf_counter() - t0
                record["timings"][f"{channel}: {name}"] = round(took, 4)
                rec["max_case_s"] = max(rec["max_case_s"], round(took, 4))
                if budget_s is not None and took > budget_s:
                    record["failures"].append(f"{channel}: {name}: took {took:.2f} s (budget {budget_s:g} s)")
        rss1, hwm1 = _rss_mb()
        record["rss_growth_mb"] = round(max(rss1 - rss0, hwm1 - hwm0), 1)
        if rss_budget_mb is not None and record["rss_growth_mb"] > rss_budget_mb:
            record["failures"].append(f"resident memory grew by {record['rss_growth_mb']} MB "
                                      f"(budget {rss_budget_mb:g} MB)")
        record["events"] = [f"{e}: {w}"[:200] for e, w in seen]
        record["imports"] = sum(1 for e, _ in seen if e == "import")
        record["calls"] = sum(1 for e, _ in seen if e != "import")
        record["failures"] += [f"audit: {e}" for e in record["events"][:20]]
        record["markers"] = sorted(os.listdir(corpus["markers"]))
        record["failures"] += [f"hostile code ran: {m}" for m in record["markers"]]
        root, listed_file = str(Path(folder).resolve()), corpus["listed"]["the listed --workload"].rsplit(":", 1)[0]
        loaded = [m for m, mod in list(sys.modules.items()) if str(getattr(mod, "__file__", "") or "").startswith(root)
                  and getattr(mod, "__file__", "") != listed_file]
        record["failures"] += [f"hostile module imported: {m}" for m in loaded]
        record["jobs_queued"] = len(runner.jobs)
        if runner.jobs or runner._thread is not None:
            record["failures"].append(f"jobs: {len(runner.jobs)} hostile jobs queued")
        # alive: the same server still reproduces the listed --workload's recipe
        alive = trust.check_model_reference(corpus["listed"]["the listed --workload"]) is not None
        if at is not None:
            at.file_uploader(key="r_upload").set_value(("again.yaml", listed_recipe.encode(),
                                                        "application/x-yaml")).run()
            alive = alive and not at.exception and not at.error and bool(at.success) \
                and "Reproduced class-listed" in at.success[0].value
        record["server_alive"] = bool(alive)
        if not alive:
            record["failures"].append("the server did not reproduce a listed recipe after the corpus")
        slow = max(record["timings"].items(), key=lambda kv: kv[1])
        record["max_case_s"], record["slowest_case"] = slow[1], slow[0]
    finally:
        if runner is not None:
            runner.shutdown()
        sys.argv[:] = old_argv
        sys.path[:] = old_path
    return record


def audit_control(folder: str) -> list[tuple[str, str]]:
    """The hooks' positive control: with ``--trust-uploads`` the same validator lets three corpus references through
    and the library resolves them (``os:getpid`` is called, a file on the server and a package that prints on import
    are imported and run): what ``audited()`` records then. Never the ones that abort or exit."""
    from compression_core.workload import resolve_workload

    corpus = dashboard_corpus(folder)
    old_argv, old_path = list(sys.argv), list(sys.path)
    sys.argv = [sys.argv[0] if sys.argv else "app.py", *corpus["argv"], "--trust-uploads"]
    for p in (corpus["pkgs"], APP_DIR):
        if p not in sys.path:
            sys.path.insert(0, p)
    try:
        import trust

        refs = [corpus["references"][k] for k in ("os:getpid (called)", "absolute path to a file on the server",
                                                   "package that prints on import")]
        with audited(corpus["paths"]) as seen, contextlib.redirect_stdout(io.StringIO()):
            for ref in refs:
                try:
                    resolve_workload(trust.check_model_reference(ref), cache=False)
                except Exception:  # none of them is a Workload: one line from the library, after running them
                    pass
        return seen
    finally:
        sys.argv[:] = old_argv
        sys.path[:] = old_path


def _page_line(at, name: str, body: bytes) -> str:
    """Upload ``body`` on the Recipe page (AppTest): exactly one one-line st.error, no exception, nothing reproduced."""
    at.file_uploader(key="r_upload").set_value((f"{abs(hash(name))}.yaml", body, "application/x-yaml")).run()
    if at.exception:
        raise ContractViolation(f"recipe page: exception {str(at.exception[0].value)[:200]}")
    errors = [e.value for e in at.error]
    if len(errors) != 1 or at.success:
        raise ContractViolation(f"recipe page: {len(errors)} error lines, {len(at.success)} successes: {errors!r:.300}")
    _one_line(errors[0], "recipe page")
    return errors[0]


def run(cases: int = 1000, subprocess_cases: int = 10, seed: int = 0, budget_s: float = 1.0,
        rss_budget_mb: float = 100.0, dashboard: bool = True) -> dict:
    from compression_core import CompressionError  # noqa: F401  (import cost outside the timings)

    shares = {"recipe_text": 0.3, "recipe_data": 0.25, "bundle": 0.2, "cli": 0.25}
    out: dict = {"targets": {}, "seed": seed}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, quick_latency():
        files, base = make_files(tmp)
        cwd = os.getcwd()
        os.chdir(tmp)  # anything a fuzzed command writes lands in the temporary folder
        try:
            out["targets"]["hostile"] = run_hostile(tmp, budget_s, rss_budget_mb)
            if dashboard:
                t0 = time.perf_counter()
                d = run_dashboard_hostile(os.path.join(tmp, "dashboard"), page=True, budget_s=budget_s,
                                          rss_budget_mb=rss_budget_mb)
                control = audit_control(os.path.join(tmp, "control"))
                if not control:
                    d["failures"].append("audit control: the hooks saw nothing when trusted references ran")
                out["targets"]["dashboard"] = {
                    "cases": d["cases"], "ok": 0, "error": d["refused"], "failures": d["failures"],
                    "seconds": round(time.perf_counter() - t0, 1), "max_case_s": d["max_case_s"],
                    "slowest_case": d["slowest_case"], "channels": d["channels"], "imports": d["imports"],
                    "calls": d["calls"], "server_alive": d["server_alive"], "rss_growth_mb": d["rss_growth_mb"],
                    "control_events": len(control)}
            plan = {
                "recipe_text": (check_recipe, recipe_texts()),
                "recipe_data": (check_recipe, recipe_dicts()),
                "bundle": (lambda b: check_bundle(b, tmp), bundle_blobs(base)),
                "cli": (check_cli, cli_argvs(files)),
            }
            for name, (fn, strategy) in plan.items():
                n = max(1, math.ceil(cases * shares[name]))
                record = {"cases": 0, "ok": 0, "error": 0, "failures": []}
                t0 = time.perf_counter()
                _collect(fn, strategy, n, record, seed)
                record["seconds"] = round(time.perf_counter() - t0, 1)
                out["targets"][name] = record
            if subprocess_cases:
                rng = random.Random(seed)
                record = {"cases": 0, "ok": 0, "error": 0, "failures": []}
                t0 = time.perf_counter()
                samples = [["validate", files["evil.yaml"]], ["measure", "--bundle", files["module.bundle.pt"]],
                           ["apply", files["range.yaml"]], ["measure", "--model", "nope"], ["bogus"],
                           ["measure", "--batch-size", "x"], ["export", files["trunc.bundle.pt"]],
                           ["validate", files["good.yaml"]], ["measure", "--bundle", files["random.bundle.pt"]],
                           ["apply", files["bad.yaml"], "--save-model", files["adir"]]]
                for argv in (samples * (subprocess_cases // len(samples) + 1))[:subprocess_cases]:
                    record["cases"] += 1
                    try:
                        record[check_cli_subprocess(argv)] += 1
                    except ContractViolation as e:
                        record["failures"].append(str(e)[:400])
                rng.random()
                record["seconds"] = round(time.perf_counter() - t0, 1)
                out["targets"]["cli_subprocess"] = record
        finally:
            os.chdir(cwd)
    over = [f"{name}: slowest case {r['max_case_s']:.2f} s > {budget_s:g} s ({r.get('slowest_case', '')[:80]})"
            for name, r in out["targets"].items() if name not in ("hostile", "cli_subprocess", "dashboard")
            and r.get("max_case_s", 0) > budget_s]
    out["targets"].setdefault("budget", {"cases": 0, "ok": 0, "error": 0, "failures": over, "seconds": 0.0})
    out["budget_s"], out["rss_budget_mb"] = budget_s, rss_budget_mb
    out["max_case_s"] = max((r.get("max_case_s", 0.0) for r in out["targets"].values()), default=0.0)
    out["cases"] = sum(r["cases"] for r in out["targets"].values())
    failures = [f for r in out["targets"].values() for f in r["failures"]]
    out["failures"] = len(failures)
    out["distinct_failures"] = sorted({f.split(":")[0] + ":" + f.split(":", 2)[-1][:120] for f in failures})[:20]
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    return out


def _text(r: dict) -> str:
    lines = [f"fuzz: {r['cases']} cases, {r['failures']} failures ({r['seconds']} s, seed {r['seed']}); slowest case "
             f"{r['max_case_s']:.3f} s (budget {r['budget_s']:g} s); hostile inputs: RSS growth "
             f"{r['targets']['hostile']['rss_growth_mb']} MB (budget {r['rss_budget_mb']:g} MB)",
             f"{'target':<16}{'cases':>7}{'ok':>7}{'error':>7}{'failures':>10}{'seconds':>9}{'slowest (s)':>13}"]
    for name, t in r["targets"].items():
        lines.append(f"{name:<16}{t['cases']:>7}{t['ok']:>7}{t['error']:>7}{len(t['failures']):>10}{t['seconds']:>9}"
                     f"{t.get('max_case_s', 0.0):>13.3f}")
    d = r["targets"].get("dashboard")
    if d:
        lines.append(f"dashboard trust boundary: {d['cases']} hostile cases ("
                     + ", ".join(f"{k} {v['cases']}" for k, v in d["channels"].items())
                     + f"): {d['error']} refused in one line, slowest {d['max_case_s']:.3f} s; imports {d['imports']},"
                     f" calls {d['calls']}; server alive: {'yes' if d['server_alive'] else 'NO'}; RSS growth "
                     f"{d['rss_growth_mb']} MB; control (trusted): {d['control_events']} events seen")
    lines += [f"  {f}" for f in r["distinct_failures"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=1000, help="in-process cases over all targets (default 1000)")
    p.add_argument("--subprocess", type=int, default=10, help="CLI cases also run as real processes (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--budget", type=float, default=1.0, help="seconds any one case may take (default 1.0)")
    p.add_argument("--rss-budget", type=float, default=100.0, help="MB the hostile inputs may grow memory by")
    p.add_argument("--no-dashboard", action="store_true",
                   help="skip the dashboard's hostile-student corpus (validator, job runner, Recipe page)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = run(a.cases, a.subprocess, a.seed, a.budget, a.rss_budget, dashboard=not a.no_dashboard)
    print(json.dumps(r, indent=2) if a.json else _text(r))
    return 0 if r["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
