"""Fuzzing: hypothesis over recipes (text and structured), bundles (random, truncated, bit-flipped) and CLI arguments.

``python -m benchmarks.fuzz [--cases N] [--subprocess K] [--json]``

The contract checked on every case: the library returns (or the CLI exits 0), or it raises ONE
``CompressionError`` line (the CLI prints one ``error: ...`` line on stderr and exits 2). Anything else (another
exception type, a traceback, a multi-line message, another exit code) is a failure. Cases are split over four
targets; every failure is recorded (not just the first), deduplicated by exception type and message head.
``--subprocess K`` also runs K of the CLI cases as real ``python -m compression_core`` processes and checks their
exit code and stderr (no "Traceback"). The same strategies drive the fast CI test (``tests/test_fuzz.py``).

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
        try:
            record[fn(value)] += 1
        except ContractViolation as e:
            record["failures"].append(str(e)[:400])

    import hypothesis

    hypothesis.seed(seed)(case)()


def run(cases: int = 1000, subprocess_cases: int = 10, seed: int = 0) -> dict:
    from compression_core import CompressionError  # noqa: F401  (import cost outside the timings)

    shares = {"recipe_text": 0.3, "recipe_data": 0.25, "bundle": 0.2, "cli": 0.25}
    out: dict = {"targets": {}, "seed": seed}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, quick_latency():
        files, base = make_files(tmp)
        cwd = os.getcwd()
        os.chdir(tmp)  # anything a fuzzed command writes lands in the temporary folder
        try:
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
    out["cases"] = sum(r["cases"] for r in out["targets"].values())
    failures = [f for r in out["targets"].values() for f in r["failures"]]
    out["failures"] = len(failures)
    out["distinct_failures"] = sorted({f.split(":")[0] + ":" + f.split(":", 2)[-1][:120] for f in failures})[:20]
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    return out


def _text(r: dict) -> str:
    lines = [f"fuzz: {r['cases']} cases, {r['failures']} failures ({r['seconds']} s, seed {r['seed']})",
             f"{'target':<16}{'cases':>7}{'ok':>7}{'error':>7}{'failures':>10}{'seconds':>9}"]
    for name, t in r["targets"].items():
        lines.append(f"{name:<16}{t['cases']:>7}{t['ok']:>7}{t['error']:>7}{len(t['failures']):>10}{t['seconds']:>9}")
    lines += [f"  {f}" for f in r["distinct_failures"]]
    return "\n".join(lines)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=1000, help="in-process cases over all targets (default 1000)")
    p.add_argument("--subprocess", type=int, default=10, help="CLI cases also run as real processes (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    r = run(a.cases, a.subprocess, a.seed)
    print(json.dumps(r, indent=2) if a.json else _text(r))
    return 0 if r["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
