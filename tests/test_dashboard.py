"""The dashboard, page by page, through Streamlit's AppTest: widgets drive the numbers, bad input is one line, the
pages are built from the library's registry and take any workload given on the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from compression_core.technique import registered_configs, technique_ui
from dashboard_modules import DASHBOARD, dashboard_module, time_latency

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
PRUNE = "x_prune_digits-cnn"
AMOUNT = "x_prune_unstructured_amount"
UNSTRUCTURED = "unstructured (weights)"
STRUCTURED = "structured (neurons / channels / heads)"


def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def last_row(at: AppTest) -> dict:
    return at.session_state["history"][-1]


def no_problems(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def titles(at: AppTest) -> list[str]:
    out = []
    for spec in chart_specs(at):
        t = spec["layout"].get("title", {})
        out.append(t.get("text", "") if isinstance(t, dict) else str(t))
    return out


# ------------------------------------------------------------------------------------------------ Explore
def test_explore_opens_on_digits_cnn_with_baseline_charts():
    at = app()
    assert at.selectbox(key="x_model").value == "digits-cnn"
    assert "Explore" in at.title[0].value
    assert [c.key for c in at.get("plotly_chart")] == ["size_chart", "acc_chart", "layer_chart"]  # + one detail
    for detail, key in (("Weights", "hist_chart"), ("Per class", "class_chart"), ("Confusion", "cm_chart")):  # one detail chart at a time: fewer redraws per move
        at.segmented_control(key="x_detail").set_value(detail).run()
        assert [c.key for c in at.get("plotly_chart")][-1] == key
    assert any("classifier" in c.value and "left alone" in c.value for c in at.caption)
    no_problems(at)


def test_sparsity_slider_drives_the_numbers_and_explains_the_size():
    at = app()
    at.radio(key=PRUNE).set_value(UNSTRUCTURED).run()
    at.slider(key=AMOUNT).set_value(0.3).run()
    low = metrics(at)
    row_low = last_row(at)
    at.slider(key=AMOUNT).set_value(0.9).run()
    high = metrics(at)
    row_high = last_row(at)
    no_problems(at)
    assert int(high["Non-zero parameters"].replace(",", "")) < int(low["Non-zero parameters"].replace(",", ""))
    assert row_high["nonzero_params"] < row_low["nonzero_params"]
    # dense zeros are still stored: the dense file does not shrink, and the page says why
    assert abs(row_high["size_bytes"] - row_low["size_bytes"]) < 1024
    assert any("Not smaller on disk" in i.value for i in at.info)
    assert not any("Shrunk" in i.value for i in at.info)
    assert row_high["sparse_size_bytes"] < row_low["sparse_size_bytes"]


def test_controls_come_from_the_config_fields():
    """The sparsity slider's range is the config's own bounds; Literal fields are choices (registry-driven)."""
    from compression_core.prune import UnstructuredPruneConfig

    at = app()
    at.radio(key=PRUNE).set_value(UNSTRUCTURED).run()
    amount = UnstructuredPruneConfig.model_fields["amount"]
    slider = at.slider(key=AMOUNT)
    assert slider.min == 0.0 and slider.max < 1.0  # ge=0, lt=1
    assert slider.value == amount.default
    scope = at.radio(key="x_prune_unstructured_scope")
    assert list(scope.options) == ["layer", "global"]
    no_problems(at)


def test_per_layer_override_and_layer_selection_reach_the_recipe():
    at = app()
    at.radio(key=PRUNE).set_value(UNSTRUCTURED).run()
    assert not at.select_slider  # the per-layer sliders are drawn only while their expander is open
    at.session_state["x_prune_unstructured_ovr_open_digits-cnn"] = True  # (the student opens it)
    at.run()
    at.select_slider(key="x_prune_unstructured_ovr_digits-cnn_conv1").set_value(0.0).run()
    at.multiselect(key="x_layers_digits-cnn").set_value(["conv1", "conv2"]).run()
    no_problems(at)
    step = at.session_state["current_recipe"]["steps"][0]
    assert step["targets"] == ["conv1", "conv2"]
    assert step["overrides"] == {"conv1": 0.0}
    assert step["include_classifier"] is False
    at.session_state["x_prune_unstructured_ovr_open_digits-cnn"] = False  # closed: its sliders are not drawn
    at.run()
    at.slider(key="x_prune_unstructured_amount").set_value(0.6).run()  # moves while it is closed
    at.slider(key="x_prune_unstructured_amount").set_value(0.7).run()
    no_problems(at)
    assert not at.select_slider
    step = at.session_state["current_recipe"]["steps"][0]
    assert step["amount"] == 0.7 and step["overrides"] == {"conv1": 0.0}  # the per-layer value is kept
    at.session_state["x_prune_unstructured_ovr_open_digits-cnn"] = True
    at.run()
    assert at.select_slider(key="x_prune_unstructured_ovr_digits-cnn_conv1").value == 0.0  # shown again as set


def test_structured_pruning_with_shrink_says_shrunk():
    at = app()
    at.radio(key=PRUNE).set_value(STRUCTURED).run()
    at.slider(key="x_prune_structured_amount").set_value(0.5).run()
    no_problems(at)
    kinds = [s["kind"] for s in at.session_state["current_recipe"]["steps"]]
    assert kinds == ["prune_structured", "shrink"]  # the parameterless add-on is on for masked (dense) storage
    row = last_row(at)
    base = at.session_state["history"][0]
    assert base["baseline"] and row["size_bytes"] < 0.8 * base["size_bytes"]
    info = " ".join(i.value for i in at.info)
    assert "Shrunk" in info and "units were removed" in info


def test_bn_folding_is_not_called_shrunk():
    """Unstructured pruning + static int8 folds BatchNorm into the convolutions (38,282 vs 38,378 parameters):
    the page says so and does not call the model shrunk (no unit was removed)."""
    at = app()
    at.radio(key=PRUNE).set_value(UNSTRUCTURED).run()
    at.selectbox(key="x_quant").set_value("int8 static (real, calibrated)").run()
    no_problems(at)
    row, base = last_row(at), at.session_state["history"][0]
    assert row["params"] < base["params"]  # the folded BN parameters are gone
    info = " ".join(i.value for i in at.info)
    assert "BatchNorm folded" in info and "no neuron or channel was removed" in info
    assert "Shrunk" not in info


def test_every_registered_quantization_technique_renders():
    at = app()
    options = [o for o in at.selectbox(key="x_quant").options if o != "none"]
    assert {"int8 dynamic (real)", "int8 static (real, calibrated)", "simulated n-bit (fake quant)"} <= set(options)
    base_size = at.session_state["history"][0]["size_bytes"]
    for quant in options:
        at.selectbox(key="x_quant").set_value(quant).run()
        no_problems(at)
        steps = at.session_state["current_recipe"]["steps"]
        if not steps:  # a technique that trains only runs on the button
            assert at.button(key="b_run")
            continue
        row = last_row(at)
        assert not row["baseline"]
        storage = {technique_ui(c).label: technique_ui(c).storage for c in registered_configs()}.get(quant)
        if storage == "dense":  # a float preparation step (SmoothQuant): not smaller by itself, and says so
            assert row["size_bytes"] >= base_size * 0.99, quant
            continue
        if row["simulated"]:
            assert row["theoretical_size_bytes"] < row["size_bytes"]
        else:
            assert row["size_bytes"] < base_size, quant


def test_fake_quant_bits_and_mixed_precision():
    at = app()
    at.selectbox(key="x_quant").set_value("simulated n-bit (fake quant)").run()
    eight = last_row(at)
    at.slider(key="x_fake_quant_bits").set_value(2).run()
    no_problems(at)
    two = last_row(at)
    assert two["simulated"] and two["theoretical_size_bytes"] < two["size_bytes"]
    assert two["accuracy"] < eight["accuracy"]  # 2 bits costs accuracy; 8 bits does not
    assert any("simulated" in m.label for m in at.metric)
    at.session_state["x_fake_quant_ovr_open_digits-cnn"] = True  # the per-layer values opened
    at.run()
    at.select_slider(key="x_fake_quant_ovr_digits-cnn_fc1").set_value(8).run()  # mixed precision: fc1 at 8 bits
    no_problems(at)
    mixed = last_row(at)
    assert at.session_state["current_recipe"]["steps"][-1]["overrides"] == {"fc1": 8}
    assert two["theoretical_size_bytes"] < mixed["theoretical_size_bytes"]
    bits = {r["name"]: r["bits"] for r in at.session_state["current_stats"]["layers"]}
    assert bits["fc1"] == 8 and bits["conv1"] == 2 and bits["fc2"] == 32  # the classifier is left alone


@pytest.mark.slow  # the timings run in a worker process (a job)
def test_latency_timed_together_every_timing_kept_with_its_conditions():
    """Before and after are timed in the same run (never a baseline cached from an earlier moment), the verdict
    says 'no measurable difference' inside the noise, and each timing is added to the row with batch, threads
    and runtime (a later timing never overwrites an earlier one)."""
    at = app()
    at.radio(key=PRUNE).set_value(UNSTRUCTURED).run()
    at.slider(key=AMOUNT).set_value(0.9).run()
    time_latency(at)
    no_problems(at)
    at.selectbox(key="x_batch").set_value(32).run()
    time_latency(at)
    no_problems(at)
    at.selectbox(key="x_batch").set_value(1).run()
    time_latency(at)
    no_problems(at)
    timings = last_row(at)["latency"]
    assert [t["batch_size"] for t in timings] == [1, 32, 1]
    assert len(timings) == 3 and all(t["threads"] == 1 and t["runtime"] == "torch" for t in timings)
    assert timings[0]["before_ms"] != timings[2]["before_ms"]  # the baseline is timed again, with the after model
    for t in timings:
        assert t["before_low_ms"] <= t["before_ms"] <= t["before_high_ms"]
        assert t["verdict"] in ("faster", "slower", "no measurable difference")
        if t["ratio_low"] <= 1.03 and t["ratio_high"] >= 0.97:
            assert t["verdict"] == "no measurable difference"
    text = " ".join(m.value for m in at.markdown)
    assert "Timed together" in text and "interleaved rounds" in text
    titles_ = titles(at)
    assert any(t.startswith("Latency per call (ms): batch 1, 1 thread") for t in titles_)


@pytest.mark.slow
def test_latency_is_timed_in_a_worker_job_with_progress_and_cancel(monkeypatch):
    """"Time before vs after" never times in the page's process: the press submits a ``latency`` job (progress and a
    Cancel button meanwhile), a worker process times it, and the page shows its chart and records it once; a Cancel
    ends the next one in one line and records nothing."""
    from compression_core import timing

    in_page = []
    real = timing.compare_calls
    monkeypatch.setattr(timing, "compare_calls", lambda *a, **k: in_page.append(1) or real(*a, **k))
    at = app()
    at.radio(key=PRUNE).set_value(UNSTRUCTURED).run()
    at.button(key="b_latency").click().run()
    no_problems(at)
    jobs = dashboard_module("jobs")
    (job_key,) = [k for k in at.session_state["_jobs"] if k.startswith("latency:")]
    job = jobs.runner().jobs[at.session_state["_jobs"][job_key]]
    assert job.kind == "latency" and job.payload["runtimes"] == ["torch"]
    assert [b for b in at.button if b.key.startswith("b_cancel_")] and at.get("progress")  # progress, Cancel
    assert "lat_chart" not in [c.key for c in at.get("plotly_chart")] and not last_row(at)["latency"]
    deadline = time.monotonic() + 240
    while job_key in at.session_state["_jobs"] and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
    no_problems(at)
    assert job.state == "done" and "lat_chart" in [c.key for c in at.get("plotly_chart")]
    assert len(last_row(at)["latency"]) == 1 and last_row(at)["latency"][0]["runtime"] == "torch"
    at.run()  # a rerun records nothing more
    assert len(last_row(at)["latency"]) == 1 and "lat_chart" in [c.key for c in at.get("plotly_chart")]
    assert in_page == []  # nothing was timed in this process

    # again: a new job (never the old result), then cancelled. Other students' jobs hold every worker meanwhile, so
    # the timing is still queued when Cancel is pressed (else, on a loaded machine, it could end first: a race)
    runner = jobs.runner()
    monkeypatch.syspath_prepend(DASHBOARD)  # a worker started meanwhile imports the job modules as the page does
    fillers = [runner.submit("sleep", {"seconds": 120 + i}, f"another-student-{i}")
               for i in range(runner.limits.workers)]
    try:
        at.button(key="b_latency").click().run()
        assert at.session_state["_jobs"][job_key] != job.id
        assert runner.status(at.session_state["_jobs"][job_key])["state"] == "queued"
        next(b for b in at.button if b.key.startswith("b_cancel_")).click().run()
    finally:
        for f in fillers:
            runner.cancel(f)
    (cancelled,) = [e.value for e in at.error]
    assert "cancelled" in cancelled and "\n" not in cancelled
    assert job_key not in at.session_state["_jobs"] and len(last_row(at)["latency"]) == 1
    assert "lat_chart" in [c.key for c in at.get("plotly_chart")]  # the earlier timing stays shown
    assert in_page == []


def test_a_finished_timing_is_recorded_once_and_a_runtime_that_failed_is_one_line():
    """The page takes a ``latency`` job's result once (kept with its conditions, one history entry per timing, not
    one per rerun) and shows a runtime that could not time the model as one line, on every rerun."""
    from compression_core.timing import compare_calls

    at = app()
    at.radio(key=PRUNE).set_value(UNSTRUCTURED).run()
    engines, state = dashboard_module("engines"), dashboard_module("state")
    cfg = (state.recipe_key(at.session_state["current_recipe"]), 1, 1, "torch")
    timed = {**compare_calls(lambda: None, lambda: None, rounds=3, block_seconds=0.001).to_json_dict(),
             "runtime": "torch"}
    line = "onnx: cannot export this model (one line)"
    at.session_state["_job_results"] = {engines.latency_job_key(cfg): {  # as job_panel keeps a finished job
        "timings": [timed], "errors": [{"runtime": "ONNX Runtime", "error": line}]}}
    for _ in range(2):
        at.run()
        assert not at.exception, at.exception
        assert [e.value for e in at.error] == [f"ONNX Runtime: {line}"]
        assert [t["before_ms"] for t in last_row(at)["latency"]] == [timed["before_ms"]]
        assert at.session_state["latency"][cfg] == [timed]
        assert "lat_chart" in [c.key for c in at.get("plotly_chart")]
    assert engines.latency_job_key(cfg) not in at.session_state["_job_results"]


def test_latency_verdict_follows_the_spread(monkeypatch):
    from types import SimpleNamespace

    from compression_core import timing
    from compression_core.timing import compare_calls, verdict

    assert verdict(0.80, 0.90) == "faster" and verdict(1.10, 1.30) == "slower"
    assert verdict(0.90, 1.05) == "no measurable difference"  # the middle half crosses 1
    assert verdict(0.985, 0.995) == "no measurable difference"  # within the 3 % tolerance

    # on the real clock the verdict depends on the machine's load: only its vocabulary is checked
    real = compare_calls(lambda: sum(range(2000)), lambda: sum(range(8000)), rounds=5, block_seconds=0.005)
    assert real.verdict in ("faster", "slower", "no measurable difference") and real.ratio > 0

    # on a simulated clock (each call advances it by its cost) the verdict follows the calls alone
    now = [0.0]
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: now[0]))

    def work(ms):
        def call():
            now[0] += ms / 1e3
        return call

    same = compare_calls(work(1), work(1), rounds=9, block_seconds=0.005)
    assert same.verdict == "no measurable difference" and same.ratio == pytest.approx(1)
    slower = compare_calls(work(1), work(4), rounds=9, block_seconds=0.005)
    assert slower.verdict == "slower" and slower.ratio == pytest.approx(4)
    faster = compare_calls(work(4), work(1), rounds=9, block_seconds=0.005)
    assert faster.verdict == "faster" and faster.ratio == pytest.approx(0.25)


@pytest.mark.slow
def test_onnx_runtime_beside_torch():
    at = app()
    if "torch and ONNX Runtime" not in at.selectbox(key="x_runtime").options:
        pytest.skip("onnxruntime is not installed")
    at.radio(key=PRUNE).set_value(STRUCTURED).run()
    at.selectbox(key="x_runtime").set_value("torch and ONNX Runtime").run()
    time_latency(at)
    no_problems(at)
    runtimes = [t["runtime"] for t in last_row(at)["latency"]]
    assert runtimes == ["torch", "ONNX Runtime"]
    table = [d.value for d in at.dataframe if "runtime" in d.value.columns][0]
    assert list(table["model"]) == ["before", "after"]


@pytest.mark.slow
def test_learn_runtime_page_measures_on_a_button_with_a_chart():
    at = app()
    at.switch_page("pages/learn_runtime.py").run()
    no_problems(at)
    if not len(at.button):
        pytest.skip("onnxruntime is not installed")
    assert "digits-lstm" in at.selectbox(key="lr_model").options  # any tensor-input model
    assert "minilm-topics" not in at.selectbox(key="lr_model").options  # dict inputs: not this lesson's export
    at.selectbox(key="lr_model").set_value("digits-mlp").run()
    at.button(key="lr_go").click().run()
    no_problems(at)
    assert any("Why the runtime matters" in m.value for m in at.markdown)
    assert any("Speed vs fp32" in t for t in titles(at))  # the Runtimes page has a chart


def test_impossible_combination_is_one_error_line():
    at = app()
    at.radio(key=PRUNE).set_value(STRUCTURED).run()
    at.checkbox(key="x_cls_digits-cnn").check().run()
    at.radio(key="x_prune_structured_unit").set_value("neurons").run()
    at.multiselect(key="x_layers_digits-cnn").set_value(["fc2"]).run()  # pruning the classifier's outputs
    assert not at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value


def test_unit_choices_are_the_units_the_model_has():
    at = app()
    at.radio(key=PRUNE).set_value(STRUCTURED).run()
    assert "heads" not in at.radio(key="x_prune_structured_unit").options  # a CNN has no attention heads
    at.selectbox(key="x_model").set_value("digits-vit").run()
    at.radio(key="x_prune_digits-vit").set_value(STRUCTURED).run()
    assert "heads" in at.radio(key="x_prune_structured_unit").options
    no_problems(at)


# ------------------------------------------------------------------------------------------------ registry
def test_a_new_technique_appears_in_explore_with_no_dashboard_edit():
    """Register a dummy technique with the library: Explore offers it, builds its slider from the config's field
    and applies it through the recipe, with no change in dashboard/."""
    from typing import Literal

    from pydantic import Field

    from compression_core.technique import StepConfig, TechniqueUI, register, unregister

    class ScaleWeightsConfig(StepConfig):
        """Multiply every Linear weight by ``factor`` (a test technique)."""

        kind: Literal["test_scale_weights"] = "test_scale_weights"
        ui = TechniqueUI(family="quantize", label="test: scale the weights", layer_types=("Linear",))
        factor: float = Field(default=1.0, ge=0.5, le=1.5)

    @register(ScaleWeightsConfig)
    def _scale(model, cfg, ctx):
        import torch

        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.Linear):
                    m.weight.mul_(cfg.factor)
        return model

    try:
        at = app()
        assert "test: scale the weights" in at.selectbox(key="x_quant").options
        at.selectbox(key="x_quant").set_value("test: scale the weights").run()
        slider = at.slider(key="x_test_scale_weights_factor")
        assert (slider.min, slider.max) == (0.5, 1.5)
        slider.set_value(1.25).run()
        no_problems(at)
        assert at.session_state["current_recipe"]["steps"] == [{"kind": "test_scale_weights", "factor": 1.25}]
        assert not last_row(at)["baseline"]
    finally:
        unregister(ScaleWeightsConfig)  # Recipe is built when asked: nothing else to reset


def test_dashboard_has_no_kind_lists_name_checks_or_sample_models():
    """Pages are built from the registry and take any workload: no per-technique kind lists, no model-name
    checks, no import of sample_models anywhere in dashboard/."""
    sources = {p: p.read_text() for p in (ROOT / "dashboard").rglob("*.py")}
    for path, text in sources.items():
        assert "import sample_models" not in text and "from sample_models" not in text, path
        assert not re.search(r"PRUNE_KINDS|QUANT_KINDS|DIGITS_MODELS", text), path
        assert not re.search(r"""["'](vit|cnn|lstm|mlp|digits)["']\s+(not\s+)?in\s+\w""", text), path


WORKLOAD_FILE = '''
import torch
from torch import nn
from compression_core import Workload


class Bag(nn.Module):
    """Token ids -> mean of embeddings -> 2 Linear layers (no class names, no info: all derived)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.fc1 = nn.Linear(16, 512)  # big enough that int8 Linear weights make the file smaller
        self.out = nn.Linear(512, 4)

    def forward(self, input_ids):
        return self.out(torch.relu(self.fc1(self.emb(input_ids).mean(1))))


def workload():
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (120, 6))  # (N, tokens) int64: never cast to float
    return Workload(name="token-bag", model=Bag().eval(), test={"input_ids": ids}, train={"input_ids": ids},
                    metric="agreement")
'''


@pytest.mark.slow
def test_workload_from_the_command_line_on_every_page(tmp_path, monkeypatch):
    """`streamlit run dashboard/app.py -- --workload FILE:attr`: the model is listed on every page and works on
    Explore, Experiments, Recipe, Sensitivity and Advise; a bad reference is one error line and the app runs."""
    path = tmp_path / "token_bag.py"
    path.write_text(textwrap.dedent(WORKLOAD_FILE))
    ref = f"{path}:workload"
    monkeypatch.setattr(sys, "argv", ["dashboard/app.py", "--workload", ref, "--workload", str(tmp_path / "nope.py:x")])
    at = app()
    assert len(at.error) == 1 and "nope.py" in at.error[0].value and "\n" not in at.error[0].value
    assert "token-bag (token_bag.py:workload)" in at.selectbox(key="x_model").options  # listed by name and file
    bad_line = at.error[0].value

    def fine(where):  # no exception, and no error line but the bad reference's (AppTest reruns only the page)
        assert not at.exception, (where, at.exception)
        assert [e.value for e in at.error if e.value != bad_line] == [], (where, [e.value for e in at.error])

    at.selectbox(key="x_model").set_value(ref).run()
    fine("model picked")
    prune = f"x_prune_{ref}"
    at.radio(key=prune).set_value(UNSTRUCTURED).run()
    at.slider(key=AMOUNT).set_value(0.6).run()
    fine("pruned")
    recipe = at.session_state["current_recipe"]
    assert recipe["model"] == ref  # recipes built here carry the workload's reference
    row = last_row(at)
    assert row["metric"] == "agreement" and row["nonzero_params"] < at.session_state["history"][-2]["nonzero_params"]
    assert "Agreement" in metrics(at)
    at.selectbox(key="x_quant").set_value("int8 dynamic (real)").run()
    time_latency(at)  # dict of int64 token ids through the timing helpers
    fine("timed")
    assert last_row(at)["latency"]
    for page, key in (("pages/experiments.py", None), ("pages/recipe.py", None), ("pages/sensitivity.py", "s_model"),
                      ("pages/advise.py", "adv_model")):
        at.switch_page(page).run()
        if key:
            assert any(o.startswith("token-bag") for o in at.selectbox(key=key).options), page
            at.selectbox(key=key).set_value(ref).run()
        fine(page)
        if page.endswith("recipe.py"):
            assert f"model: {ref}" in at.code[0].value
            recipe_file = tmp_path / "from_dashboard.yaml"
            recipe_file.write_text(at.code[0].value)
    # the same numbers from the command line, on the same workload file
    out = subprocess.run([sys.executable, "-m", "compression_core", "apply", str(recipe_file), "--json"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    after = json.loads(out.stdout)["after"]
    shown = next(r for r in at.session_state["history"] if r["recipe"] == at.session_state["current_recipe"])
    assert (after["accuracy"], after["size_bytes"]) == (shown["accuracy"], shown["size_bytes"])


# ------------------------------------------------------------------------------------------------ other pages
@pytest.mark.slow  # the timings run in a worker process (a job)
def test_experiments_table_rounded_labelled_and_relative_per_model():
    at = app()
    at.radio(key=PRUNE).set_value(UNSTRUCTURED).run()
    at.slider(key=AMOUNT).set_value(0.8).run()
    at.button(key="b_save").click().run()  # kept in the history (a preview only replaces the current row)
    at.selectbox(key="x_model").set_value("digits-mlp").run()
    at.radio(key="x_prune_digits-mlp").set_value(UNSTRUCTURED).run()
    time_latency(at)
    at.selectbox(key="x_batch").set_value(32).run()
    time_latency(at)
    at.switch_page("pages/experiments.py").run()
    no_problems(at)
    table = at.dataframe[0].value
    assert len(table) >= 4  # two baselines, the saved CNN at 0.8, the timed MLP at 0.5
    assert not {"best_KB", "accuracy_%", "size_KB"} & set(table.columns)  # internal names are gone
    for col in ("value", "change_pt"):  # rounded for people, not 98.61111111111111
        assert all(abs(v * 100 - round(v * 100)) < 1e-6 for v in table[col].dropna())
    specs = {t: s for t, s in zip(titles(at), chart_specs(at))}
    assert "Metric change vs size" in specs and "Metric change vs latency" in specs
    stars = [tr for tr in specs["Metric change vs size"]["data"] if tr.get("name", "").startswith("baseline")]
    assert stars and set(stars[0]["x"]) == {1.0} and set(stars[0]["y"]) == {0.0}  # every model at its own (1, 0)
    timings = at.dataframe[1].value
    assert list(timings["conditions"]) == ["torch, batch 1, 1 thread", "torch, batch 32, 1 thread"]
    side = at.dataframe[-1].value
    assert "dense file (KB)" in list(side.iloc[:, 0]) and "best_KB" not in list(side.iloc[:, 0])


def test_pareto_front_is_the_non_dominated_set():
    sys.path.insert(0, str(ROOT / "dashboard"))
    import pandas as pd

    import charts

    df = pd.DataFrame({"id": [1, 2, 3, 4], "size": [10.0, 5.0, 6.0, 1.0], "accuracy_%": [99.0, 98.0, 97.0, 50.0]})
    assert list(charts.pareto_front(df, "size")["id"]) == [4, 2, 1]


@pytest.mark.slow
def test_recipe_export_round_trips_through_the_cli(tmp_path):
    at = app()
    at.radio(key=PRUNE).set_value(UNSTRUCTURED).run()
    at.slider(key=AMOUNT).set_value(0.7).run()
    at.selectbox(key="x_quant").set_value("simulated n-bit (fake quant)").run()
    at.slider(key="x_fake_quant_bits").set_value(4).run()
    shown = last_row(at)
    at.switch_page("pages/recipe.py").run()
    no_problems(at)
    yaml_text = at.code[0].value
    assert "python -m compression_core apply recipe.yaml" in at.code[1].value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml_text)
    out = subprocess.run([sys.executable, "-m", "compression_core", "apply", str(path), "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    after = json.loads(out.stdout)["after"]
    assert after["accuracy"] == shown["accuracy"]
    assert after["size_bytes"] == shown["size_bytes"]


def test_recipe_upload_reproduces_and_bad_uploads_are_one_line():
    at = app()
    at.switch_page("pages/recipe.py").run()
    good = b"version: 1\nmodel: digits-mlp\nseed: 0\nsteps:\n- kind: prune_unstructured\n  amount: 0.5\n"
    at.file_uploader(key="r_upload").set_value(("r.yaml", good, "application/x-yaml")).run()
    no_problems(at)
    assert any("Reproduced digits-mlp" in s.value for s in at.success)
    bad = [
        b"version: 1\nmodel: digits-mlp\nsteps: [\n",  # malformed YAML
        b"version: 1\nmodel: digits-mlp\nsteps:\n- kind: prune_unstructured\n  amount: 1.5\n",  # out of range
        b"version: 1\nmodel: nope\nsteps: []\n",  # unknown model
        b"version: 1\nmodel: digits-mlp\nsteps:\n- kind: teleport\n",  # unknown kind
        b"\xff\xfe\x00garbage",  # not text
        b"- just\n- a list\n",
    ]
    for content in bad:
        at.file_uploader(key="r_upload").set_value(("bad.yaml", content, "application/x-yaml")).run()
        assert not at.exception, content
        assert len(at.error) == 1 and "\n" not in at.error[0].value, (content, [e.value for e in at.error])
    # any file name is read (the uploader's own type filter only ever showed a tooltip): the error is on the page
    at.file_uploader(key="r_upload").set_value(("notes.txt", b"hello", "text/plain")).run()
    assert not at.exception and len(at.error) == 1


@pytest.mark.parametrize("page", ["pages/learn_pruning.py", "pages/learn_quantization.py",
                                  "pages/learn_distillation.py", "pages/learn_dtypes.py"])
def test_learn_pages_render_and_react(page):
    at = app()
    at.switch_page(page).run()
    no_problems(at)
    spec = [c.proto.spec for c in at.get("plotly_chart")]
    assert spec
    slider = at.slider[-1] if len(at.slider) else at.select_slider[0]
    options = getattr(slider, "options", None)
    slider.set_value(options[-1] if options else slider.max).run()
    no_problems(at)
    assert [c.proto.spec for c in at.get("plotly_chart")] != spec  # the plot follows the slider


def test_dtype_table_lists_the_six_types_and_shows_the_fp16_overflow():
    at = app()
    at.switch_page("pages/learn_dtypes.py").run()
    table = at.dataframe[0].value
    assert list(table["type"]) == ["fp32", "fp16", "bf16", "int8", "uint8", "int4"]
    assert list(table["bits"]) == [32, 16, 16, 8, 8, 4]
    at.select_slider(key="ldt_mult").set_value(1e6).run()
    errors = at.dataframe[1].value.set_index("dtype")
    assert errors.loc["fp16", "non-finite values"] > 0  # fp16 overflows above 65504
    assert errors.loc["bf16", "non-finite values"] == 0
    bars = next(s for s in chart_specs(at) if "Max |error|" in json.dumps(s["layout"]))["data"][0]
    fp16 = bars["x"].index("fp16")
    assert "overflow" in bars["text"][fp16] and bars["y"][fp16] >= max(bars["y"])  # drawn, tallest, labelled


# ------------------------------------------------------------------------------------------------ issue 18
def test_cpu_facts_come_from_this_machine_not_from_text():
    """The Quantization lesson and the Runtimes page state the same detected facts; no CPU fact is written into
    a page's text."""
    from compression_core.cpu import cpu_facts

    facts = cpu_facts()
    at = app()
    at.switch_page("pages/learn_quantization.py").run()
    text = " ".join(m.value for m in at.markdown)
    assert facts.int8_sentence() in text and facts.summary() in text
    at.switch_page("pages/learn_runtime.py").run()
    text = " ".join(m.value for m in at.markdown)
    assert facts.int8_sentence() in text and facts.summary() in text
    for path in (ROOT / "dashboard").rglob("*.py"):
        src = path.read_text()
        assert not re.search(r"(this CPU|this machine)[^\"']{0,40}(has no|lacks|without) (int8|VNNI|AVX)", src), path


@pytest.mark.slow
def test_arrows_and_signs_match_the_direction():
    """A size reduction is not an up arrow; an accuracy drop is negative."""
    from streamlit.proto.Metric_pb2 import Metric

    at = app()
    at.switch_page("pages/sensitivity.py").run()
    at.radio(key="s_target").set_value("file size (KB)").run()
    at.number_input(key="s_kb_digits-cnn").set_value(40.0).run()
    at.button(key="s_fit").click().run()
    no_problems(at)
    size = next(m for m in at.metric if m.label.startswith("File size"))
    assert "x of baseline" in size.proto.delta and size.proto.direction == Metric.MetricDirection.NONE
    acc = next(m for m in at.metric if m.label.startswith("Calibration"))
    if acc.proto.delta.startswith("-"):
        assert acc.proto.direction == Metric.MetricDirection.DOWN
    at.switch_page("pages/advise.py").run()
    no_problems(at)
    table = at.dataframe[0].value
    assert "accuracy change (points)" in table.columns and "drop (points)" not in table.columns
    worse = table[table["accuracy %"] < table["accuracy %"].iloc[0] - 1e-9]
    assert (worse["accuracy change (points)"] < 0).all()  # a drop reads as a negative change
    spec = next(s for s in chart_specs(at) if "Measured candidates" in json.dumps(s["layout"]))
    assert not spec["layout"].get("annotations")  # the threshold is a legend line, not text over the bars


@pytest.mark.slow
def test_distillation_helps_with_few_labels_and_the_page_says_so():
    from benchmarks.distillation import run

    rows = {r["mode"]: r for r in run(seeds=1, only="few-labels")["rows"]}
    assert rows["distilled"]["labelled_images"] == 0 and rows["alone"]["labelled_images"] == 50
    assert rows["distilled"]["errors_mean"] < 0.5 * rows["alone"]["errors_mean"]  # measured: ~12 vs ~70 errors
    at = app()
    at.switch_page("pages/learn_distillation.py").run()
    no_problems(at)
    text = " ".join(m.value for m in at.markdown)
    assert "no gain" in text and "50 labelled images" in text
    at.slider(key="ld_T").set_value(1.0).run()
    names = [t["name"] for t in chart_specs(at)[0]["data"]]
    assert len(names) == len(set(names))  # never "T = 1 / T = 1"


def test_loopback_by_default_and_no_outside_lookups():
    import tomllib

    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1" and cfg["browser"]["gatherUsageStats"] is False
    from benchmarks.local_app import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = ""
        for line in proc.stdout:
            out += line
            if "URL:" in line:
                break
    finally:
        proc.terminate()
        proc.wait(10)
    assert f"127.0.0.1:{port}" in out
    assert "External URL" not in out and "Network URL" not in out and "external IP" not in out, out
