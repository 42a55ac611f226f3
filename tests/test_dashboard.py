"""The dashboard, page by page, through Streamlit's AppTest: widgets drive the numbers, bad input is one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
PRUNE = "x_prune_digits-cnn"
AMOUNT = "x_amount_unstructured (weights)"


def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def last_row(at: AppTest) -> dict:
    return at.session_state["history"][-1]


def no_problems(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def test_explore_opens_on_digits_cnn_with_baseline_charts():
    at = app()
    assert at.selectbox(key="x_model").value == "digits-cnn"
    assert "Explore" in at.title[0].value
    charts = [c for c in at.get("plotly_chart")]
    assert len(charts) >= 5  # size, accuracy, latency, per-layer, histogram, per-class, confusion
    assert any("classifier" in c.value and "left alone" in c.value for c in at.caption)
    no_problems(at)


def test_sparsity_slider_drives_the_numbers_and_explains_the_size():
    at = app()
    at.radio(key=PRUNE).set_value("unstructured (weights)").run()
    at.slider(key=AMOUNT).set_value(0.3).run()
    low = metrics(at)
    row_low = last_row(at)
    at.slider(key=AMOUNT).set_value(0.9).run()
    high = metrics(at)
    row_high = last_row(at)
    no_problems(at)
    nz = [k for k in low if k.startswith("Non-zero")][0]
    assert int(high[nz].replace(",", "")) < int(low[nz].replace(",", ""))
    assert row_high["nonzero_params"] < row_low["nonzero_params"]
    # dense zeros are still stored: the dense file does not shrink, and the page says why
    assert abs(row_high["size_bytes"] - row_low["size_bytes"]) < 1024
    assert any("Not smaller on disk" in i.value for i in at.info)
    # the sparse-encoded size does shrink with sparsity (when the library reports it)
    if row_high["sparse_KB"] is not None and row_low["sparse_KB"] is not None:
        assert row_high["sparse_KB"] < row_low["sparse_KB"]


def test_per_layer_override_and_layer_selection_reach_the_recipe():
    at = app()
    at.radio(key=PRUNE).set_value("unstructured (weights)").run()
    at.select_slider(key="x_ovr_digits-cnn_conv1").set_value(0.0).run()
    at.multiselect(key="x_layers_digits-cnn").set_value(["conv1", "conv2"]).run()
    no_problems(at)
    step = at.session_state["current_recipe"]["steps"][0]
    assert step["targets"] == ["conv1", "conv2"]
    assert step["overrides"] == {"conv1": 0.0}
    assert step["include_classifier"] is False


def test_structured_pruning_with_shrink_makes_a_smaller_file():
    at = app()
    at.radio(key=PRUNE).set_value("structured (neurons / channels)").run()
    at.slider(key="x_amount_structured (neurons / channels)").set_value(0.5).run()
    no_problems(at)
    row = last_row(at)
    base = at.session_state["history"][0]
    assert base["baseline"] and row["size_bytes"] < 0.8 * base["size_bytes"]
    assert any("Shrunk" in i.value for i in at.info)


@pytest.mark.parametrize("quant", ["simulated n-bit (fake quant)", "int8 dynamic (real)", "int8 static (real, calibrated)",
                                   "int4 packed weights (real)", "fp16 (real)", "bf16 (real)"])
def test_every_quantization_kind_renders(quant):
    at = app()
    if quant not in at.selectbox(key="x_quant").options:
        pytest.skip(f"{quant} is not registered by the library in this tree")
    at.selectbox(key="x_quant").set_value(quant).run()
    no_problems(at)
    row = last_row(at)
    assert not row["baseline"]
    if quant.startswith("simulated"):
        at.slider(key="x_bits").set_value(2).run()
        no_problems(at)
        two = last_row(at)
        assert two["simulated"] and two["theoretical_KB"] is not None and two["theoretical_KB"] < two["size_KB"]
        assert two["accuracy_%"] < row["accuracy_%"]  # 2 bits costs accuracy; 8 bits does not
        assert any("simulated" in m.label for m in at.metric)
        at.select_slider(key="x_bits_digits-cnn_fc1").set_value(8).run()  # mixed precision: fc1 back to 8 bits
        no_problems(at)
        mixed = last_row(at)
        assert at.session_state["current_recipe"]["steps"][-1]["overrides"] == {"fc1": 8}
        assert two["theoretical_KB"] < mixed["theoretical_KB"]
        bits = {r["name"]: r["bits"] for r in at.session_state["current_stats"]["layers"]}
        assert bits["fc1"] == 8 and bits["conv1"] == 2 and bits["fc2"] == 32  # the classifier is left alone
    else:
        assert row["size_bytes"] < at.session_state["history"][0]["size_bytes"]


def test_training_runs_on_a_button_with_progress():
    at = app()
    at.selectbox(key="x_model").set_value("digits-mlp").run()
    at.radio(key="x_prune_digits-mlp").set_value("unstructured (weights)").run()
    at.slider(key=AMOUNT).set_value(0.9).run()
    before = last_row(at)
    at.number_input(key="x_ft").set_value(2).run()
    no_problems(at)
    assert last_row(at)["key"] == before["key"]  # nothing trains until the button
    at.button(key="b_run").click().run()
    no_problems(at)
    after = last_row(at)
    assert any(s["kind"] == "finetune" for s in at.session_state["current_recipe"]["steps"])
    assert after["key"] != before["key"] and after["nonzero_params"] == before["nonzero_params"]
    assert after["accuracy_%"] > before["accuracy_%"]


def test_latency_on_request_states_batch_and_threads():
    at = app()
    at.radio(key=PRUNE).set_value("unstructured (weights)").run()
    at.button(key="b_latency").click().run()
    no_problems(at)
    assert last_row(at)["latency_ms"] > 0
    assert any("Measured at batch 1" in m.value for m in at.markdown)


def test_onnx_runtime_side_by_side_with_torch():
    at = app()
    if "torch + ONNX Runtime" not in at.selectbox(key="x_runtime").options:
        pytest.skip("compression_core.ort (onnxruntime) is not available")
    at.radio(key=PRUNE).set_value("structured (neurons / channels)").run()
    at.selectbox(key="x_runtime").set_value("torch + ONNX Runtime").run()
    at.button(key="b_latency").click().run()
    no_problems(at)
    table = [d.value for d in at.dataframe if "runtime" in d.value.columns][0]
    assert set(table["runtime"]) == {"torch", "ONNX Runtime"} and len(table) == 4
    assert (table["latency (ms)"] > 0).all()
    # the shrunk model's accuracy is the same in both runtimes (the same weights)
    acc = table.set_index(["runtime", "model"])["accuracy (%)"]
    assert abs(acc[("torch", "after")] - acc[("ONNX Runtime", "after")]) <= 0.3


def test_learn_runtime_page_measures_on_a_button():
    at = app()
    at.switch_page("pages/learn_runtime.py").run()
    no_problems(at)
    if not len(at.button):
        pytest.skip("compression_core.ort (onnxruntime) is not available")
    at.selectbox(key="lr_model").set_value("digits-mlp").run()
    at.button(key="lr_go").click().run()
    no_problems(at)
    assert any("Why the runtime matters" in m.value for m in at.markdown)


def test_impossible_combination_is_one_error_line():
    at = app()
    at.radio(key=PRUNE).set_value("structured (neurons / channels)").run()
    at.checkbox(key="x_cls_digits-cnn").check().run()
    at.radio(key="x_unit_digits-cnn").set_value("neurons").run()
    at.multiselect(key="x_layers_digits-cnn").set_value(["fc2"]).run()  # pruning the classifier's outputs
    assert not at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value


def test_experiments_history_pareto_and_compare():
    at = app()
    at.radio(key=PRUNE).set_value("unstructured (weights)").run()
    at.slider(key=AMOUNT).set_value(0.8).run()
    at.switch_page("pages/experiments.py").run()
    no_problems(at)
    assert len(at.dataframe[0].value) >= 3  # baseline, 0.5, 0.8
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert "Accuracy vs size" in titles
    at.selectbox(key="e_a").set_value(1).run()
    side = at.dataframe[-1].value
    assert list(side.columns) == ["field", "row 1", f"row {at.selectbox(key='e_b').value}"]


def test_pareto_front_is_the_non_dominated_set():
    sys.path.insert(0, str(ROOT / "dashboard"))
    import pandas as pd

    import charts

    df = pd.DataFrame({"id": [1, 2, 3, 4], "size": [10.0, 5.0, 6.0, 1.0], "accuracy_%": [99.0, 98.0, 97.0, 50.0]})
    assert list(charts.pareto_front(df, "size")["id"]) == [4, 2, 1]


def test_recipe_export_round_trips_through_the_cli(tmp_path):
    at = app()
    at.radio(key=PRUNE).set_value("unstructured (weights)").run()
    at.slider(key=AMOUNT).set_value(0.7).run()
    if "simulated n-bit (fake quant)" in at.selectbox(key="x_quant").options:
        at.selectbox(key="x_quant").set_value("simulated n-bit (fake quant)").run()
        at.slider(key="x_bits").set_value(4).run()
    shown = last_row(at)
    at.switch_page("pages/recipe.py").run()
    no_problems(at)
    yaml_text = at.code[0].value
    assert "python -m compression_core apply recipe.yaml" in at.code[1].value
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml_text)
    out = subprocess.run([sys.executable, "-m", "compression_core", "apply", str(path), "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
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


@pytest.mark.parametrize("page", ["pages/learn_pruning.py", "pages/learn_quantization.py",
                                  "pages/learn_distillation.py", "pages/learn_dtypes.py"])
def test_learn_pages_render_and_react(page):
    at = app()
    at.switch_page(page).run()
    no_problems(at)
    spec = [c.proto.spec for c in at.get("plotly_chart")]
    assert spec
    slider = at.slider[0] if len(at.slider) else at.select_slider[0]
    options = getattr(slider, "options", None)
    slider.set_value(options[-1] if options else slider.max).run()
    no_problems(at)
    assert [c.proto.spec for c in at.get("plotly_chart")] != spec  # the plot follows the slider


def test_dtype_table_lists_the_six_types():
    at = app()
    at.switch_page("pages/learn_dtypes.py").run()
    table = at.dataframe[0].value
    assert list(table["type"]) == ["fp32", "fp16", "bf16", "int8", "uint8", "int4"]
    assert list(table["bits"]) == [32, 16, 16, 8, 8, 4]
    at.select_slider(key="ldt_mult").set_value(1e5).run()
    errors = at.dataframe[1].value.set_index("dtype")
    assert errors.loc["fp16", "non-finite values"] > 0  # fp16 overflows above 65504
    assert errors.loc["bf16", "non-finite values"] == 0
