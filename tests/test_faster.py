"""Slower than fp32, and what is faster (issue 24 item 2): ``compression_core.faster.faster_path`` times the
compressed model, fp32 and the other compressed paths together and says in one line when the model is slower and
which path is faster, or that none is. The wording and the choice are tested with an injected timer (no timing
asserts); the slow set runs the real timer and checks that the named path is the fastest of those measured."""

from __future__ import annotations

import json

import pytest

from compression_core import resolve_workload
from compression_core.cli import main
from compression_core.faster import PATHS, THIS_IN_ORT, FasterPath, faster_path
from compression_core.quantize import DynamicInt8Config, quantize
from dashboard_modules import time_latency

STATIC = {"version": 1, "model": "digits-mlp", "steps": [{"kind": "quantize_static"}]}


def fake_timer(ms: dict[str, float], seen: list | None = None):
    """A timer that reports fixed per-call times (3 rounds each) and records which calls it was given."""

    def run(calls):
        if seen is not None:
            seen.append(sorted(calls))
        for call in calls.values():
            call()  # every call really runs once (a broken path would fail here)
        return {n: [ms.get(n, ms["other"])] * 3 for n in calls}

    return run


@pytest.fixture(scope="module")
def mlp():
    wl = resolve_workload("digits-mlp")
    return wl, quantize(wl.model, DynamicInt8Config(), wl)


def test_slower_says_the_ratio_and_names_the_fastest_faster_path(mlp):
    wl, q = mlp
    r = faster_path(wl, q, label="dynamic int8", batch_size=8, paths=("torch static int8", "torch dynamic int8"),
                    timer=fake_timer({"fp32": 1.0, "this": 2.4, "torch static int8": 0.9, "torch dynamic int8": 0.5,
                                      "other": 9}))
    assert r.slower and r.this.ratio == pytest.approx(2.4)
    line = r.line()
    assert "\n" not in line
    assert line.startswith("slower: dynamic int8 runs 2.4x slower than fp32 in torch at batch 8, 1 thread")
    assert r.faster.path == "torch dynamic int8" and "faster here: torch dynamic int8 (0.50x fp32's time" in line
    assert "{kind: quantize_dynamic}" in line and "timed in the same run" in line
    assert [p.path for p in r.paths] == ["torch dynamic int8", "torch static int8"]  # fastest first
    assert r.faster.ratio == min(p.ratio for p in r.paths)
    d = r.to_json_dict()
    assert d["line"] == line and json.loads(json.dumps(d))["faster"]["path"] == "torch dynamic int8"
    assert FasterPath.model_validate({k: v for k, v in d.items() if k not in ("line", "summary")}).line() == line


def test_slower_with_nothing_faster_says_so(mlp):
    wl, q = mlp
    r = faster_path(wl, q, label="dynamic int8", paths=("torch static int8",),
                    timer=fake_timer({"fp32": 1.0, "this": 3.0, "other": 1.6}))
    assert r.faster is None
    assert "no compressed path is faster than fp32 here (the fastest, torch static int8 (1.60x fp32's time" \
        in r.line()


@pytest.mark.slow
def test_a_faster_path_that_answers_differently_is_not_named(mlp, monkeypatch):
    wl, q = mlp
    import compression_core.faster as F

    real = F._labels
    monkeypatch.setattr(F, "_labels", lambda m, x: (real(m, x) + 1) % 10 if m.__class__.__name__ == "OrtModule"
                        else real(m, x))  # the ORT path disagrees with fp32 everywhere
    r = faster_path(wl, q, paths=("ORT dynamic int8", "torch static int8"),
                    timer=fake_timer({"fp32": 1.0, "this": 2.0, "ORT dynamic int8": 0.2, "other": 0.8}))
    ort = next(p for p in r.paths if p.path == "ORT dynamic int8")
    assert ort.agreement == 0.0 and r.faster.path == "torch static int8"


def test_not_slower_builds_nothing_when_asked_only_if_slower(mlp):
    wl, q = mlp
    seen: list = []
    r = faster_path(wl, q, only_if_slower=True, timer=fake_timer({"fp32": 1.0, "this": 0.6, "other": 1}, seen))
    assert r.verdict == "faster" and r.line() is None and r.paths == [] and seen == [["fp32", "this"]]
    assert "against fp32 in torch at batch 1, 1 thread: 0.60x fp32's time: faster" in r.summary()
    same = faster_path(wl, q, only_if_slower=True, timer=fake_timer({"fp32": 1.0, "this": 1.01, "other": 1}))
    assert same.verdict == "no measurable difference" and same.line() is None


@pytest.mark.slow  # an ONNX export (onnx's import alone takes seconds)
def test_a_model_that_runs_in_onnx_runtime_is_named_so_against_torch_fp32():
    r = faster_path("digits-mlp", {"version": 1, "model": "digits-mlp",
                                   "steps": [{"kind": "quantize_dynamic", "engine": "onnxruntime"}]},
                    paths=(), timer=fake_timer({"fp32": 1.0, "this": 1.5, "other": 1}))
    assert r.this.engine == "onnxruntime"
    assert r.line().startswith("slower: int8 dynamic (in ONNX Runtime) runs 1.5x slower than fp32 in torch at batch 1")


def test_a_recipe_is_applied_and_not_compared_with_itself():
    seen: list = []
    r = faster_path("digits-mlp", STATIC, paths=("torch static int8", "torch dynamic int8"),
                    timer=fake_timer({"fp32": 1.0, "this": 2.0, "other": 0.7}, seen))
    assert r.label == "int8 static" and [p.path for p in r.paths] == ["torch dynamic int8"]
    assert seen[-1] == ["fp32", "this", "torch dynamic int8"]


def test_the_default_paths_come_from_the_environment(monkeypatch):
    from compression_core.errors import CompressionError
    from compression_core.faster import PATHS_ENV, default_paths

    monkeypatch.delenv(PATHS_ENV, raising=False)
    assert default_paths() == (THIS_IN_ORT, *PATHS)
    monkeypatch.setenv(PATHS_ENV, "ORT dynamic int8, torch dynamic int8")
    assert default_paths() == ("ORT dynamic int8", "torch dynamic int8")
    monkeypatch.setenv(PATHS_ENV, "")
    assert default_paths() == ()
    monkeypatch.setenv(PATHS_ENV, "tensorrt")
    with pytest.raises(CompressionError, match="unknown path 'tensorrt'"):
        default_paths()


@pytest.mark.slow  # an ONNX export (onnx's import alone takes seconds)
def test_a_path_that_refuses_the_model_is_skipped_in_one_line(mlp):
    wl, q = mlp
    r = faster_path(wl, q, paths=("ORT MatMulNBits int4",), batch_size=1,
                    timer=fake_timer({"fp32": 1.0, "this": 2.0, "other": 3.0}))
    # digits-mlp's Linear layers are narrower than a MatMulNBits block, or it works: either way no traceback
    assert all("\n" not in v for v in r.skipped.values())
    assert r.line().startswith("slower:")


def test_measure_bundle_and_apply_print_the_line(tmp_path, capsys, monkeypatch):
    import compression_core.cli as cli

    timer = fake_timer({"fp32": 1.0, "this": 2.5, "other": 0.5})
    monkeypatch.setattr(cli, "faster_path", lambda *a, **k: faster_path(
        *a, **{**k, "timer": timer, "paths": ("torch dynamic int8",)}))
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps(STATIC))
    bundle = tmp_path / "m.bundle"
    monkeypatch.setattr(cli, "TOLERANCE", -1.0)  # apply's own before/after timing: treat any result as slower
    assert main(["apply", str(recipe), "--json", "--save-model", str(bundle), "--batch-size", "4"]) == 0
    out = json.loads(capsys.readouterr().out)
    line = out["faster_path"]["line"]
    assert line.startswith("slower: int8 static runs 2.5x slower than fp32 in torch at batch 4, 1 thread")
    assert "faster here: torch dynamic int8" in line and line in out["advisories"]
    assert main(["measure", "--bundle", str(bundle)]) == 0
    text = capsys.readouterr().out
    assert "slower: int8 static runs 2.5x slower than fp32 in torch at batch 1" in text


@pytest.mark.slow
def test_real_timing_names_the_fastest_measured_path():
    """digits-cnn static int8 at batch 1 against every path, real clock: whatever the verdict, a named path is the
    fastest of the agreeing ones at or below fp32's time, and the line says it (or that none is)."""
    r = faster_path("digits-cnn", {"version": 1, "model": "digits-cnn", "steps": [{"kind": "quantize_static"}]},
                    rounds=3, paths=(THIS_IN_ORT, *PATHS))
    assert {p.path for p in r.paths} | set(r.skipped) >= set(PATHS) - {"torch static int8"} | {THIS_IN_ORT}
    good = [p for p in r.paths if p.ratio <= 1 and (p.agreement is None or p.agreement >= r.bar)]
    if good:
        assert r.faster.ratio == min(p.ratio for p in good)
    else:
        assert r.faster is None
    if r.slower:
        assert r.line().startswith(f"slower: int8 static runs {r.this.ratio:.1f}x slower than fp32 in torch")
        assert (f"faster here: {r.faster.path}" if r.faster else "no compressed path") in r.line()
    else:
        assert r.line() is None


# ------------------------------------------------------------------------------------------------ the pages
def _dashboard(name: str):
    from pathlib import Path
    import sys

    root = Path(__file__).resolve().parent.parent
    if str(root / "dashboard") not in sys.path:
        sys.path.insert(0, str(root / "dashboard"))
    return __import__(name)


@pytest.mark.slow
def test_explore_says_slower_offers_the_engines_job_and_shows_peak_ram_at_the_chosen_batch(monkeypatch):
    """Explore's latency panel: a slower timing is one line with its ratio; 'Find a faster engine' is a button (a
    job, never a slider move); the job's result (run here as a worker runs it, with an injected timer) is shown
    with its line; peak RAM at batch 1 and at the chosen batch beside the timing."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    import compression_core.faster as F

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"), default_timeout=180)
    at.run()
    at.selectbox(key="x_quant").set_value("int8 static (real, calibrated)").run()
    at.selectbox(key="x_batch").set_value(8).run()
    assert "Find a faster engine" not in [b.label for b in at.button]  # nothing before the timing is asked for
    time_latency(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    (comps,) = [v for k, v in at.session_state["latency"].items() if k[1] == 8]
    slower = [w.value for w in at.warning if w.value.startswith("slower:")]
    assert len(slower) == sum(c["verdict"] == "slower" for c in comps)
    for w in slower:
        assert "int8 static runs" in w and "x slower than fp32 in torch at batch 8, 1 thread" in w
    assert "Find a faster engine" in [b.label for b in at.button]
    ram = next(d.value for d in at.dataframe if "peak RAM, batch 1" in d.value.columns)
    assert list(ram["model"]) == ["before", "after"] and "peak RAM, batch 8" in ram.columns
    at.selectbox(key="x_runtime").set_value("torch and ONNX Runtime").run()
    time_latency(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    ort = next(d.value for d in at.dataframe if "peak RAM, batch 8" in d.value.columns
               and list(d.value["runtime"]) == ["ONNX Runtime"] * 2)
    assert list(ort["runtime"]) == ["ONNX Runtime"] * 2 and all(v.endswith("KB") or v.endswith("MB")
                                                                 for v in ort["peak RAM, batch 8"])
    at.selectbox(key="x_runtime").set_value("torch").run()

    monkeypatch.setattr(F, "interleaved_timer", lambda rounds=7: fake_timer({"fp32": 1.0, "this": 2.0, "other": 0.5}))
    jobs, engines = _dashboard("jobs"), _dashboard("engines")
    recipe = at.session_state["current_recipe"]
    res = jobs.run_faster(engines.payload("digits-cnn", recipe, 8, 1), lambda f, m: None)
    assert res["line"].startswith("slower: int8 static runs 2.0x slower than fp32 in torch at batch 8, 1 thread")
    at.session_state["_job_results"] = {engines.job_key(recipe, 8, 1): res}  # as job_panel keeps a finished job
    at.run()
    assert res["line"] in [w.value for w in at.warning]
    assert not any("press 'Find a faster engine'" in w.value for w in at.warning)  # one line, the job's
    table = next(d.value for d in at.dataframe if "x fp32 time" in d.value.columns)
    assert table["path"].iloc[0] == "int8 static" and table["faster"].sum() == 1


@pytest.mark.slow
def test_advise_offers_the_same_engines_job():
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    _dashboard("state")  # dashboard/ on sys.path, as app.py puts it
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "pages" / "advise.py"),
                           default_timeout=240)
    at.session_state["adv_model"] = "digits-mlp"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "Slower than fp32? What is faster here" in [h.value for h in at.subheader]
    assert "Find a faster engine" in [b.label for b in at.button]
    assert at.selectbox(key="adv_engine_pick").options


@pytest.mark.slow
def test_search_says_when_the_chosen_point_was_slower_and_offers_the_engines_job():
    """A search that timed its points (the 'Latency too' box): the chosen front point slower than the baseline in
    that timing is said in one line with the ratio, and the same 'Find a faster engine' job is offered."""
    import threading
    import time
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    recipe = {"version": 1, "model": "digits-mlp", "seed": 0, "steps": [{"kind": "quantize_static"}]}
    point = {"trial": 0, "origin": "method", "accuracy": 0.95, "size_bytes": 9000, "size_ratio": 0.3,
             "latency_ms": 0.25, "peak_ram_bytes": None, "recipe": recipe, "on_front": True,
             "settings": {"sparsity": {}, "method": "int8_static", "structured": 0.0, "embedding": "float"},
             "violations": {}}
    run = {"ref": "digits-mlp", "trials": 1, "points": [point], "front": [point], "message": "done", "done": True,
           "error": None, "stop": threading.Event(), "t0": time.perf_counter(),
           "result": {"baseline": {"accuracy": 0.96, "size_bytes": 30000, "latency_ms": 0.1}, "seconds": 1.0,
                      "cancelled": False}}
    _dashboard("state")  # dashboard/ on sys.path, as app.py puts it
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "pages" / "search.py"),
                           default_timeout=120)
    at.session_state["q_model"] = "digits-mlp"
    at.session_state["srch_run"] = run
    at.run()
    assert not at.exception, at.exception
    assert ("slower: int8 static runs 2.5x slower than fp32 in torch at batch 1, 1 thread; press 'Find a faster "
            "engine'") in " ".join(w.value for w in at.warning)
    assert "Find a faster engine" in [b.label for b in at.button]


def test_advise_prints_the_line_when_its_recommendation_is_slower(capsys, monkeypatch):
    import compression_core.cli as cli
    from compression_core.advise import Advice, Candidate

    def cand(method, label, ratio):
        return Candidate(method=method, label=label, accuracy=0.9, drop_pt=0.1, size_bytes=10, size_ratio=0.3,
                         latency_ms=ratio, latency_ratio=ratio, within_threshold=True, seconds=0.1)

    advice = Advice(model="digits-mlp", model_type="mlp", rule="quantize_dynamic", recommended="quantize_dynamic",
                    reason="r", max_drop_pt=1.0, batch_size=32, threads=1, baseline=cand("fp32", "fp32", 1.0),
                    candidates=[cand("quantize_dynamic", "dynamic int8", 1.8)])
    monkeypatch.setattr(cli, "advise", lambda *a, **k: advice)
    timer = fake_timer({"fp32": 1.0, "this": 1.8, "other": 0.5})
    monkeypatch.setattr(cli, "faster_path", lambda *a, **k: faster_path(
        *a, **{**k, "timer": timer, "paths": ("torch static int8",)}))
    assert main(["advise", "--model", "digits-mlp"]) == 0
    out = capsys.readouterr().out
    assert "slower: dynamic int8 runs 1.8x slower than fp32 in torch at batch 32, 1 thread; faster here: torch " \
           "static int8" in out


@pytest.mark.slow
def test_the_slower_benchmark_names_the_fastest_path_on_a_sample():
    from benchmarks.slower import check

    m = check("digits-mlp", batch_size=8, rounds=1)
    assert m["named_fastest_ok"] and (m["line"] is not None) == (m["verdict"] == "slower")


@pytest.mark.slow
def test_two_jobs_running_on_one_page_each_have_their_own_cancel_button(tmp_path):
    """Explore can run the engines job beside an export job: each progress panel's Cancel button has its own key
    (one shared key was a duplicate-widget error)."""
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    dashboard = Path(__file__).resolve().parent.parent / "dashboard"
    script = tmp_path / "two_jobs.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(dashboard)!r})\nimport jobs\n"
                      "jobs.job_panel('sleep', {'seconds': 30}, 'one', 'sid')\n"
                      "jobs.job_panel('sleep', {'seconds': 31}, 'two', 'sid')\n")
    at = AppTest.from_file(str(script), default_timeout=60)
    at.run()
    try:
        assert not at.exception, at.exception
        cancels = [b for b in at.button if b.key.startswith("b_cancel_")]
        assert len(cancels) == 2 and len({b.key for b in cancels}) == 2
    finally:
        for b in [b for b in at.button if b.key.startswith("b_cancel_")]:
            b.click().run()


@pytest.mark.slow
def test_the_engines_job_runs_in_a_worker_from_explore():
    """The whole way: Explore's 'Find a faster engine' submits the 'faster' job to the worker pool; polling (what
    the progress fragment does in a browser) brings its table and line onto the page."""
    import time
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py"), default_timeout=180)
    at.run()
    at.selectbox(key="x_quant").set_value("int8 static (real, calibrated)").run()
    time_latency(at)
    at.button(key="b_job_faster").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    deadline = time.monotonic() + 240
    while not any("x fp32 time" in d.value.columns for d in at.dataframe) and time.monotonic() < deadline:
        time.sleep(1.0)
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
    table = next(d.value for d in at.dataframe if "x fp32 time" in d.value.columns)
    assert table["path"].iloc[0] == "int8 static" and "torch dynamic int8" in list(table["path"])
    shown = [w.value for w in at.warning] + [s.value for s in at.success]
    assert any(v.startswith("slower: int8 static runs") or v.startswith("int8 static against fp32") for v in shown)
