"""Fuzzing: hypothesis over recipes (text and structured), bundles (random, truncated, bit-flipped) and CLI arguments.

``python -m benchmarks.fuzz [--cases N] [--subprocess K] [--json]``

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


def run(cases: int = 1000, subprocess_cases: int = 10, seed: int = 0, budget_s: float = 1.0,
        rss_budget_mb: float = 100.0) -> dict:
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
            for name, r in out["targets"].items() if name not in ("hostile", "cli_subprocess")
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
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = run(a.cases, a.subprocess, a.seed, a.budget, a.rss_budget)
    print(json.dumps(r, indent=2) if a.json else _text(r))
    return 0 if r["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
