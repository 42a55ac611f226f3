"""Issue 24, items 1 and 5 (pages): the compressed model taken home (a bundle and an ONNX file from Explore, Recipe,
Search and Class, named after the model and recipe), a bundle opened on the Recipe page (weights only, its reference
checked by the server's one validator before anything is resolved, re-measured beside what it recorded), and the
page fixes: the Weight bits control under int8, the Shrunk message, Search's default point and "Load into Explore",
Advise's size beside Explore's, the database path on Experiments, per-layer charts of 36+ layers.

The fast tests drive the pages with Streamlit's AppTest; the browser ones (marked browser/slow, one server and one
chromium for the module) take both files home from Explore (Must show #1: downloaded through the page's buttons, the
bundle re-measured with the CLI, the ONNX file run in ONNX Runtime), open a bundle on the Recipe page and check tables
and many-layer charts at 1280x720."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from browser_helpers import (PROBLEMS_JS, browser, choose, needs_chromium, open_page,  # noqa: F401 (fixtures)
                             save_screenshot, server, wait_idle)

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
PRUNE = "x_prune_digits-cnn"
AMOUNT = "x_prune_unstructured_amount"
UNSTRUCTURED = "unstructured (weights)"
STATIC = "int8 static (real, calibrated)"


def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    return at


def no_problems(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]


def dashboard_module(name: str):
    """A dashboard helper module as the app imported it (dashboard/ is on sys.path once app.py ran)."""
    if str(ROOT / "dashboard") not in sys.path:
        sys.path.insert(0, str(ROOT / "dashboard"))
    return __import__(name)


def pruned_int8(at: AppTest) -> AppTest:
    at.radio(key=PRUNE).set_value(UNSTRUCTURED).run()
    at.slider(key=AMOUNT).set_value(0.5).run()
    at.selectbox(key="x_quant").set_value(STATIC).run()
    no_problems(at)
    return at


def layer_chart_spec(at: AppTest) -> dict:
    for chart in at.get("plotly_chart"):
        if chart.proto.id and "layer_chart" in chart.proto.id:
            return json.loads(chart.proto.spec)
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if "Per-layer" in json.dumps(spec["layout"].get("title", "")):
            return spec
    raise AssertionError("no per-layer chart on the page")


# ------------------------------------------------------------------------------------------------ names
def test_download_names_come_from_the_model_and_the_recipe():
    th = dashboard_module("take_home")
    assert th.file_stem({"model": "digits-cnn", "steps": [{"kind": "prune_unstructured", "amount": 0.5},
                                                           {"kind": "quantize_static"}]}) == "digits-cnn-prune50-int8"
    assert th.file_stem({"model": "digits-cnn", "steps": []}) == "digits-cnn-baseline"
    stem = th.file_stem({"model": "x"}, name="my model/../../etc passwd;rm -rf")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", stem) and ".." not in stem.replace("...", "")
    stem = th.file_stem({"model": "digits-cnn", "steps": [
        {"kind": "prune_structured", "amount": 0.3, "unit": "channels"}, {"kind": "shrink"},
        {"kind": "quantize_static", "weight_bits": 4}, {"kind": "prune_unstructured", "amount": 0.0,
                                                        "overrides": {"a": 0.5, "b": 0.25}}]})
    assert stem == "digits-cnn-structured30-shrink-int8w4-prune38mix"


# ------------------------------------------------------------------------------------------------ Explore
def test_explore_offers_the_bundle_and_the_onnx_file_named_after_the_recipe():
    at = pruned_int8(app())
    assert [b.proto.help for b in at.get("download_button") if b.label == "Download the bundle"] == \
        ["digits-cnn-prune50-int8.bundle, built when you click"]
    assert any(b.label == "Build the ONNX file" for b in at.button)  # a job: the export takes seconds of CPU
    assert any("measure --bundle digits-cnn-prune50-int8.bundle" in c.value for c in at.caption)


def test_the_bundle_explore_offers_measures_the_same_in_the_cli(tmp_path, capsys):
    """The in-page bundle (what the download button's callable returns) is the page's model: the CLI's
    ``measure --bundle`` gives the accuracy and size the page shows, and the bundle records them."""
    from compression_core import cli

    at = pruned_int8(app())
    recipe, shown = at.session_state["current_recipe"], at.session_state["current_stats"]
    th = dashboard_module("take_home")
    data = th.bundle_of(recipe, shown)
    path = tmp_path / "digits-cnn-prune50-int8.bundle"
    path.write_bytes(data)
    capsys.readouterr()
    assert cli.main(["measure", "--bundle", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["accuracy"] == pytest.approx(shown["accuracy"], abs=1e-12)
    assert out["size_bytes"] == shown["size_bytes"]
    assert out["model"] == "digits-cnn-prune50-int8"  # the recipe's name
    from compression_core.bundle import read_bundle

    rec, _ = read_bundle(path)
    assert th.recorded(rec.description) == {"metric": "accuracy", "accuracy": shown["accuracy"],
                                            "size_bytes": shown["size_bytes"]}
    shown_kb = [m.value for m in at.metric if m.label.startswith("File size")][0]
    assert shown_kb == f"{out['size_bytes'] / 1024:,.1f} KB"


@pytest.mark.slow
def test_the_export_job_gives_an_onnx_file_that_runs_in_onnx_runtime():
    """The ``export`` job (run here directly, as a worker runs it): the deploy engine's .onnx file of a static int8
    model runs in ONNX Runtime and predicts what the bundle's model predicts."""
    import onnxruntime as ort

    from compression_core import resolve_workload
    from compression_core.bundle import load_bundle

    jobs = dashboard_module("jobs")
    recipe = {"version": 1, "model": "digits-cnn", "seed": 0, "name": "digits-cnn-prune50-int8",
              "steps": [{"kind": "prune_unstructured", "amount": 0.5}, {"kind": "quantize_static"}]}
    out = jobs.run_export({"recipe": recipe, "bundle_too": True}, lambda f, m: None)
    assert out["onnx_error"] is None and out["bundle"] and out["onnx"]
    _, model = load_bundle(out["bundle"])
    x = resolve_workload("digits-cnn").test.x
    sess = ort.InferenceSession(out["onnx"], providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0].argmax(-1)
    with torch.no_grad():
        want = model(x).argmax(-1).numpy()
    assert (got == want).mean() >= 0.97
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load_from_string(out["onnx"]).graph.node)


# ------------------------------------------------------------------------------------------------ opening a bundle
def recipe_page() -> AppTest:
    at = app()
    at.switch_page("pages/recipe.py").run()
    no_problems(at)
    return at


def test_uploaders_state_their_real_limits():
    import tomllib

    from streamlit import config

    from compression_core.bundle import MAX_BUNDLE_BYTES
    from compression_core.recipe import MAX_RECIPE_BYTES

    # the server reads its cap from dashboard/.streamlit/config.toml (equal to the bundle limit: test_uploads checks
    # the files); in a test process another test may have loaded Streamlit's config first, so set it as the server does
    shipped = tomllib.loads((ROOT / "dashboard" / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    config.set_option("server.maxUploadSize", shipped)
    at = recipe_page()
    recipe_up, bundle_up = at.file_uploader(key="r_upload"), at.file_uploader(key="r_bundle")
    assert f"at most {MAX_RECIPE_BYTES // 1024} KB" in recipe_up.label
    assert f"at most {MAX_BUNDLE_BYTES // 2**20} MB" in bundle_up.label
    assert bundle_up.proto.max_upload_size_mb == MAX_BUNDLE_BYTES // 2**20
    # the widget's own check is the server's cap (a file it refuses stays listed with a stale error); the page
    # refuses over 256 KB in one line and the dropzone's "per file" line says 256 KB
    assert recipe_up.proto.max_upload_size_mb == MAX_BUNDLE_BYTES // 2**20
    assert f"{MAX_RECIPE_BYTES // 1024} KB per file" in " ".join(h.proto.body for h in at.get("html"))
    for path in (ROOT / ".streamlit" / "config.toml", ROOT / "dashboard" / ".streamlit" / "config.toml"):
        assert tomllib.loads(path.read_text())["server"]["maxUploadSize"] == MAX_BUNDLE_BYTES // 2**20


def make_bundle(steps: list[dict], model: str = "digits-cnn", description: str | None = None) -> bytes:
    from compression_core.bundle import bundle_bytes
    from compression_core.recipe import apply_recipe, load_recipe

    data = {"version": 1, "model": model, "steps": steps}
    if description:
        data["description"] = description
    r = apply_recipe(load_recipe(data), with_latency=False, measure_before=False, measure_after=False)
    return bundle_bytes(r.recipe, r.model)


def test_an_opened_bundle_is_re_measured_beside_what_it_recorded():
    from compression_core import measure
    from compression_core.bundle import load_bundle

    raw = make_bundle([{"kind": "prune_unstructured", "amount": 0.5}])
    _, model = load_bundle(raw)
    from compression_core import resolve_workload

    truth = measure(model, resolve_workload("digits-cnn"), with_latency=False)
    th = dashboard_module("take_home")
    note = th.measured_note({"accuracy": truth.accuracy, "size_bytes": truth.size_bytes}, {"metric": "accuracy"})
    raw = make_bundle([{"kind": "prune_unstructured", "amount": 0.5}], description=note)
    at = recipe_page()
    at.file_uploader(key="r_bundle").set_value(("mine.bundle", raw, "application/octet-stream")).run()
    no_problems(at)
    assert any("re-measured here" in s.value and f"{truth.size_bytes:,} bytes" in s.value for s in at.success)
    table = at.table[-1].value
    assert list(table.iloc[:, 0]) == ["re-measured here", "recorded in the bundle"]
    assert any("Same numbers as the bundle recorded" in c.value for c in at.caption)
    # a bundle from `apply --save-model` (no recorded numbers): re-measured, and said so
    at.file_uploader(key="r_bundle").set_value(("cli.bundle", make_bundle([{"kind": "quantize_dynamic"}]),
                                               "application/octet-stream")).run()
    no_problems(at)
    assert any("recorded no measured numbers" in c.value for c in at.caption)


def foreign_bundle(ref: str) -> bytes:
    """A well-formed bundle whose recorded workload is ``ref`` (a file this server does not list)."""
    from compression_core.bundle import BUNDLE_FORMAT, BUNDLE_VERSION

    buf = io.BytesIO()
    recipe = json.dumps({"version": 1, "model": ref, "seed": 0, "steps": [{"kind": "quantize_dynamic"}]})
    torch.save({"format": BUNDLE_FORMAT, "format_version": BUNDLE_VERSION, "recipe": recipe, "workload": ref,
                "state_dict": {"w": torch.zeros(2)}}, buf)
    return buf.getvalue()


class Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_bundle_naming_an_unlisted_model_is_refused_before_anything_is_resolved(tmp_path):
    marker = tmp_path / "imported"
    evil = tmp_path / "evil_workload.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\nworkload = None\n")
    at = recipe_page()
    at.file_uploader(key="r_bundle").set_value(("evil.bundle", foreign_bundle(f"{evil}:workload"),
                                               "application/octet-stream")).run()
    assert not at.exception
    assert len(at.error) == 1 and "\n" not in at.error[0].value
    assert "is not one of this server's models" in at.error[0].value and "digits-cnn" in at.error[0].value
    assert not marker.exists()  # nothing was imported
    # pickled code is refused by the weights-only load, in one line
    buf = io.BytesIO()
    torch.save({"format": "compression-lab-bundle", "format_version": 1, "recipe": "{}", "state_dict": Evil()}, buf)
    at.file_uploader(key="r_bundle").set_value(("code.bundle", buf.getvalue(), "application/octet-stream")).run()
    assert not at.exception and len(at.error) == 1 and "refused" in at.error[0].value
    # a new, good file: the old error is gone
    at.file_uploader(key="r_bundle").set_value(("good.bundle", make_bundle([{"kind": "quantize_dynamic"}]),
                                               "application/octet-stream")).run()
    no_problems(at)
    assert at.success
    # not a bundle at all: one line; a recipe's stale error never sticks to the bundle opener either
    at.file_uploader(key="r_bundle").set_value(("notes.txt", b"hello", "text/plain")).run()
    assert not at.exception and len(at.error) == 1 and "not a Compression Lab bundle" in at.error[0].value


def test_the_recipe_page_offers_the_current_model():
    at = pruned_int8(app())
    at.switch_page("pages/recipe.py").run()
    no_problems(at)
    assert any(b.label == "Download the bundle" and b.proto.help.startswith("digits-cnn-prune50-int8.bundle")
               for b in at.get("download_button"))


def test_a_big_bundle_is_re_measured_in_a_job(monkeypatch):
    """Over ``MEASURE_IN_PAGE_BYTES`` the opener offers a background job; the job function re-measures it."""
    th = dashboard_module("take_home")
    jobs = dashboard_module("jobs")
    raw = make_bundle([{"kind": "quantize_dynamic"}])
    monkeypatch.setattr(th, "MEASURE_IN_PAGE_BYTES", 10)
    at = recipe_page()
    at.file_uploader(key="r_bundle").set_value(("big.bundle", raw, "application/octet-stream")).run()
    no_problems(at)
    assert any(b.label == "Re-measure it (a background job)" for b in at.button)
    out = jobs.run_measure_bundle({"model": "digits-cnn", "bundle": raw}, lambda f, m: None)
    assert out["stats"]["size_bytes"] == th.remeasure(raw, "digits-cnn")["size_bytes"]


def test_search_and_class_offer_the_chosen_model(tmp_path):
    store = dashboard_module("store")
    old, store.database._STORE = store.database._STORE, store.Store(f"sqlite:///{tmp_path / 'class.db'}")
    try:
        offered_on_search_and_class(store)
    finally:
        store.database._STORE.engine.dispose()
        store.database._STORE = old


def offered_on_search_and_class(store):
    front = [point(1, 0.98, 60000, {n: 0.5 for n in LAYERS}, "int8")]
    at = app()
    at.session_state["srch_run"] = fake_search_run(front)
    at.switch_page("pages/search.py").run()
    no_problems(at)
    helps = [b.proto.help for b in at.get("download_button") if b.label == "Download the bundle"]
    assert helps and helps[0].startswith("digits-cnn-prune50-int8.bundle")
    db = store.get_store()
    db.set_challenge({"kind": "max_size", "model": "digits-cnn", "metric": "accuracy", "limit": 50.0,
                      "count_simulated": False})
    at.switch_page("pages/explore.py").run()
    pruned_int8(at)
    at.switch_page("pages/classroom.py").run()
    no_problems(at)
    assert any(e.label.startswith("Take this model home") for e in at.get("expander"))
    helps = [b.proto.help for b in at.get("download_button") if b.label == "Download the bundle"]
    assert helps and helps[0].startswith("digits-cnn-prune50-int8.bundle")


# ------------------------------------------------------------------------------------------------ page fixes
def test_weight_bits_under_int8_acts_on_the_chart_and_says_the_size_stays():
    at = app()
    at.selectbox(key="x_quant").set_value(STATIC).run()
    bits8 = layer_chart_spec(at)["data"][1]["y"]
    assert not any("Weight bits" in c.value for c in at.caption)
    at.slider(key="x_quantize_static_weight_bits").set_value(4).run()
    no_problems(at)
    spec = layer_chart_spec(at)
    assert spec["data"][1]["y"] != bits8 and 4 in spec["data"][1]["y"]  # the chart moves with the control
    assert any("Weight bits 4" in c.value and "file size does not change" in c.value for c in at.caption)


def test_shrunk_message_lists_every_layer_and_not_the_classifier():
    explain = dashboard_module("explain")
    before = {"params": 1000, "size_bytes": 4000, "nonzero_params": 1000,
              "layers": [{"name": f"l{i}", "type": "Linear", "params": 100} for i in range(8)]
              + [{"name": "fc", "type": "Linear", "params": 200}]}
    after = {"params": 500, "size_bytes": 2000, "nonzero_params": 500,
             "layers": [{"name": f"l{i}", "type": "Linear", "params": 50} for i in range(8)]
             + [{"name": "fc", "type": "Linear", "params": 100}]}
    text = " ".join(explain.why_size(before, after, ["dense", "shrunk"], classifier="fc"))
    assert "l0, l1, l2, l3, l4, l5 and 2 more" in text
    units = text.split("units were removed")[1].split(":")[0]
    assert "fc" not in units and "classifier `fc` keeps all its outputs" in text


def test_shrunk_on_the_page_leaves_the_classifier_out_of_the_list():
    at = app()
    at.radio(key=PRUNE).set_value("structured (neurons / channels / heads)").run()
    at.checkbox(key="x_shrink_after_prune_structured").check().run()
    no_problems(at)
    text = " ".join(i.value for i in at.info)
    assert "**Shrunk:**" in text
    removed = text.split("units were removed")[1].split(":")[0]
    assert "fc2" not in removed  # the classifier the page says it leaves alone


def test_structured_masks_are_not_called_zeros_from_rounding():
    at = app()
    at.radio(key=PRUNE).set_value("structured (neurons / channels / heads)").run()
    at.checkbox(key="x_shrink_after_prune_structured").uncheck().run()  # masks only, stored dense
    no_problems(at)
    text = " ".join(i.value for i in at.info)
    assert "Zeros from rounding" not in text and "Not smaller on disk?" in text


def fake_search_run(front: list[dict]) -> dict:
    return {"ref": "digits-cnn", "trials": len(front), "seed": 0, "points": front, "front": front,
            "message": "done", "done": True, "error": None, "stop": threading.Event(), "t0": time.perf_counter(),
            "result": {"baseline": {}, "seconds": 1.0, "cancelled": False, "first_point_seconds": 0.1}}


def point(trial: int, acc: float, size: int, sparsity: dict[str, float], method: str = "none") -> dict:
    steps = []
    if any(sparsity.values()):
        steps.append({"kind": "prune_unstructured", "amount": 0.0, "scope": "layer", "targets": list(sparsity),
                      "overrides": sparsity, "include_classifier": False})
    if method == "int8":
        steps.append({"kind": "quantize_dynamic"})
    return {"trial": trial, "origin": "search", "accuracy": acc, "size_bytes": size, "size_ratio": size / 160000,
            "settings": {"method": method, "sparsity": sparsity}, "error": None,
            "recipe": {"version": 1, "model": "digits-cnn", "seed": 0, "steps": steps}}


LAYERS = ("conv1", "conv2", "fc1")


def test_search_starts_on_the_best_point_and_loads_values_where_they_show():
    front = [point(1, 0.90, 20000, {n: 0.8 for n in LAYERS}, "int8"),
             point(2, 0.975, 60000, {"conv1": 0.25, "conv2": 0.5, "fc1": 0.75}),
             point(3, 0.98, 90000, {n: 0.5 for n in LAYERS})]
    at = app()
    at.session_state["srch_run"] = fake_search_run(front)
    at.switch_page("pages/search.py").run()
    no_problems(at)
    assert at.selectbox(key="q_pick").value == 2  # the best-metric point, not the smallest (lowest-accuracy) one
    # a uniform point: the main slider shows the loaded value
    at.button(key="q_load").click().run()
    at.switch_page("pages/explore.py").run()
    no_problems(at)
    assert at.slider(key=AMOUNT).value == pytest.approx(0.5)
    step = at.session_state["current_recipe"]["steps"][0]
    assert step.get("amount") in (None, 0.5) and not step.get("overrides")
    # per-layer values: kept per layer, the panel open with a line saying they were loaded
    at.switch_page("pages/search.py").run()
    at.selectbox(key="q_pick").set_value(1).run()
    at.button(key="q_load").click().run()
    at.switch_page("pages/explore.py").run()
    no_problems(at)
    assert any("Per-layer values loaded" in i.value for i in at.info)
    assert at.get("expander")  # the per-layer panel
    assert any(e.proto.expanded for e in at.get("expander") if e.label == "Per-layer values")
    ovr = at.session_state["current_recipe"]["steps"][0]["overrides"]
    assert ovr == {"conv1": 0.25, "conv2": 0.5, "fc1": 0.75}


def test_loading_a_quantize_only_point_leaves_nothing_of_the_previous_one():
    front = [point(1, 0.98, 60000, {n: 0.5 for n in LAYERS}), point(2, 0.985, 61000, {n: 0.0 for n in LAYERS}, "int8")]
    at = app()
    at.session_state["srch_run"] = fake_search_run(front)
    for k in (0, 1):  # the pruned point, looked at in Explore, then the quantize-only one
        at.switch_page("pages/search.py").run()
        at.selectbox(key="q_pick").set_value(k).run()
        if k:  # Explore's values as a browser keeps them across pages (app.py keeps x_ keys; AppTest drops them)
            at.session_state[PRUNE] = UNSTRUCTURED
        at.button(key="q_load").click().run()
        if k:
            assert at.session_state[PRUNE] == "none"  # the earlier point's pruning is not left behind
        at.switch_page("pages/explore.py").run()
        no_problems(at)
    assert at.radio(key=PRUNE).value == "none"
    assert [s["kind"] for s in at.session_state["current_recipe"]["steps"]] == ["quantize_dynamic"]
    assert at.checkbox(key="x_cls_digits-cnn").value  # as the search measured it: the classifier too
    from compression_core.recipe import apply_recipe, load_recipe

    r = apply_recipe(load_recipe(front[1]["recipe"]), with_latency=False, measure_before=False)
    size = [m.value for m in at.metric if m.label.startswith("File size")][0]
    assert size == f"{r.after.size_bytes / 1024:,.1f} KB"  # the point's recipe, so the point's size


def test_search_table_is_short_enough_to_fit():
    front = [point(i, 0.9 + i / 100, 20000 * i, {n: 0.025 * (i + k) for k, n in enumerate(LAYERS)}) for i in (1, 2)]
    at = app()
    at.session_state["srch_run"] = fake_search_run(front)
    at.switch_page("pages/search.py").run()
    no_problems(at)
    df = at.dataframe[0].value
    assert df["sparsity"].str.len().max() <= 30  # one short summary, not every layer's value


def test_advise_opens_its_method_in_explore_with_the_same_size():
    at = app()
    at.switch_page("pages/advise.py").run()
    no_problems(at)
    shown = at.dataframe[0].value
    kb = float(shown.loc[shown["method"] == "static int8", "size KB"].iloc[0])
    at.selectbox(key="adv_open_pick").set_value("quantize_static").run()
    at.button(key="adv_open").click().run()
    no_problems(at)
    assert at.selectbox(key="x_quant").value == STATIC and at.checkbox(key="x_cls_digits-cnn").value
    size = [m.value for m in at.metric if m.label.startswith("File size")][0]
    assert size == f"{kb:,.1f} KB"  # the same number on both pages


def test_experiments_page_hides_the_database_path_from_students():
    store = dashboard_module("store")
    at = pruned_int8(app())
    at.button(key="b_save").click().run()
    at.switch_page("pages/experiments.py").run()
    no_problems(at)
    db = store.get_store()
    assert db.persistent  # the tests' own temporary SQLite file (conftest)
    text = " ".join(c.value for c in at.caption)
    assert "Kept in this server's database" in text and db.where not in text
    bid = at.session_state["_browser_id"]
    db.grant_teacher(bid, "passcode")  # a teacher may see where it is kept
    try:
        at.run()
        no_problems(at)
        assert db.where in " ".join(c.value for c in at.caption)
    finally:
        db.revoke_teacher(bid)


def test_many_layers_are_drawn_as_a_grid_by_block():
    charts = dashboard_module("charts")
    roles = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")
    layers = [{"name": "encoder.embeddings.word_embeddings", "type": "Embedding", "params": 10, "sparsity": 0.0,
               "bits": 32}]
    layers += [{"name": f"encoder.encoder.layer.{b}.{r}", "type": "Linear", "params": 10, "sparsity": b / 10,
                "bits": 8} for b in range(6) for r in roles]
    layers += [{"name": "head", "type": "Linear", "params": 10, "sparsity": 0.0, "bits": 32}]
    fig = charts.layer_chart(layers, layers)
    trace = fig["data"][0]
    assert trace["type"] == "heatmap"
    assert trace["x"] == ["layer.0", "layer.1", "layer.2", "layer.3", "layer.4", "layer.5", "other"]
    assert len(trace["y"]) == len(roles) + 2 and max(len(y) for y in trace["y"]) <= 30
    cells = [t for row in trace["text"] for t in row if t]
    assert len(cells) == len(layers)  # every layer has its cell
    assert trace["z"][trace["y"].index("attention.self.query")][3] == pytest.approx(30.0)  # layer.3's: 30 % sparse
    few = charts.layer_chart(layers[:10], layers[:10])
    assert few["data"][0]["type"] == "bar"


# ------------------------------------------------------------------------------------------------ in a real browser
TABLES_JS = """() => Array.from(document.querySelectorAll('[data-testid="stDataFrame"]')).map(t => {
  const s = t.querySelector('.dvn-scroller'); return s ? [s.scrollWidth, s.clientWidth] : [0, 0]; })"""


def metric_value(page, label: str) -> str:
    return page.locator('[data-testid="stMetric"]').filter(has_text=label).first \
        .locator('[data-testid="stMetricValue"]').inner_text().strip()


def go(page, name: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]').filter(has_text=name).first.click()
    wait_idle(page, 1000)


MODEL = "digits-cnn"
STEM = "digits-cnn-prune50-int8"  # the download's name: the model and one tag per recipe step
ORT_TOLERANCE = 0.01  # torch int8 vs ONNX Runtime QDQ int8: different requantization rounding (the test's docstring)


def metric(page, label: str) -> tuple[str, str]:
    """(label, value) of the first st.metric whose label starts with ``label``, as the page shows them."""
    m = page.locator('[data-testid="stMetric"]').filter(
        has=page.locator('[data-testid="stMetricLabel"]', has_text=label)).first
    return (m.locator('[data-testid="stMetricLabel"]').inner_text().strip(),
            m.locator('[data-testid="stMetricValue"]').inner_text().strip())


def percent(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+) ?%", text)
    assert m, f"not a percentage: {text!r}"
    return float(m.group(1)) / 100


def kilobytes(text: str) -> float:
    m = re.fullmatch(r"([0-9,.]+) KB", text)
    assert m, f"not a size in KB: {text!r}"
    return float(m.group(1).replace(",", ""))


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
def test_bundle_and_onnx_downloaded_from_explore_measure_and_run_as_the_page_said(server, browser, tmp_path):
    """Issue 24, Must show #1, in a real browser: the compressed model taken home from Explore.

    Debian's chromium (Playwright) at 1280x720 on digits-cnn with 50 % unstructured pruning and int8 static: the
    bundle and the ONNX file are downloaded through the page's own buttons (the ONNX file is built by the export job
    the "Build the ONNX file" button starts, as a user would wait for it). Then, outside the page:

    - the CLI re-measures the downloaded bundle (``python -m compression_core measure --bundle FILE --json``) and
      gives the accuracy and file size the page showed (equal to the page's rounding: 2 decimals of a percent, 0.1
      KB), and the bundle records exactly those numbers;
    - ONNX Runtime runs the downloaded .onnx on the workload's whole test split; its accuracy is within 1 point of
      the page's. Why a tolerance: the page's model is torch's int8 (x86/fbgemm kernels) while the .onnx is ONNX
      Runtime's QDQ int8 graph; the two engines requantize activations with their own rounding, so a few borderline
      test images can flip (on the machine this was written on the two agreed on all 360 test images; 1 point is 3
      images, room for another CPU's kernels). The ONNX file's predictions must also agree with the bundle's torch
      model on >= 98 % of the test images.

    Kept to one page visit (~60-90 s on a loaded 2-core machine): the CLI runs while the ONNX export job runs.
    Opening a bundle on the Recipe page is checked with AppTest above."""
    import numpy as np
    import onnxruntime as ort

    from compression_core import resolve_workload
    from compression_core.bundle import load_bundle, read_bundle

    t0 = time.perf_counter()
    page = browser.new_page(viewport={"width": 1280, "height": 720}, accept_downloads=True)
    page.goto(server)  # Explore with its first model, digits-cnn (the offered file's name below says so)
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    wait_idle(page)
    page.get_by_text("unstructured (weights)", exact=True).click()  # 50 % by default
    wait_idle(page)
    choose(page, "Quantization kind", "int8 static")
    # the page has caught up with both choices when the offered file is named after them (a loaded machine lags)
    page.get_by_text(f"{STEM}.bundle").first.wait_for(timeout=120_000)
    wait_idle(page)
    t_chosen = time.perf_counter() - t0
    acc_label, acc_text = metric(page, "Accuracy")
    size_label, size_text = metric(page, "File size")
    assert acc_label == "Accuracy", acc_label  # the whole test split: no "(preview)" or "(estimate)" stage
    page_acc, page_kb = percent(acc_text), kilobytes(size_text)

    bundle_button = page.get_by_role("button", name="Download the bundle")
    bundle_button.scroll_into_view_if_needed()
    with page.expect_download(timeout=120_000) as got:
        bundle_button.click()
    assert got.value.suggested_filename == f"{STEM}.bundle"
    bundle = tmp_path / got.value.suggested_filename
    got.value.save_as(bundle)
    # the CLI re-measures the bundle while the page builds the ONNX file (two cores: the export job waits on neither)
    cli_run = subprocess.Popen([sys.executable, "-m", "compression_core", "measure", "--bundle", str(bundle), "--json"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        page.get_by_role("button", name="Build the ONNX file").click()
        onnx_button = page.get_by_role("button", name="Download the ONNX file")
        onnx_button.wait_for(timeout=300_000)
        wait_idle(page)
        with page.expect_download(timeout=120_000) as got:
            onnx_button.click()
        assert got.value.suggested_filename == f"{STEM}.onnx"
        onnx_file = tmp_path / got.value.suggested_filename
        got.value.save_as(onnx_file)
        t_onnx = time.perf_counter() - t0
        assert not page.evaluate(PROBLEMS_JS)
        save_screenshot(page, tmp_path, "take-home-explore-1280x720")
        stdout, stderr = cli_run.communicate(timeout=300)
    finally:
        if cli_run.poll() is None:
            cli_run.kill()
            cli_run.wait()
    page.close()
    browser_s = time.perf_counter() - t0

    # the CLI: the accuracy and the size the page showed, at the page's rounding
    assert cli_run.returncode == 0, stderr[-2000:]
    cli = json.loads(stdout)
    assert abs(cli["accuracy"] - page_acc) <= 0.00005 + 1e-12, (cli["accuracy"], acc_text)  # "97.50 %": 2 decimals
    assert f"{cli['accuracy'] * 100:.2f} %" == acc_text
    assert abs(cli["size_bytes"] / 1024 - page_kb) <= 0.05 + 1e-9, (cli["size_bytes"], size_text)
    assert f"{cli['size_bytes'] / 1024:,.1f} KB" == size_text
    # the file is that model: the weights the size counts plus the recipe (a few KB of JSON and pickle framing)
    assert cli["size_bytes"] < bundle.stat().st_size < cli["size_bytes"] + 16 * 1024
    recipe, _ = read_bundle(bundle)
    # it records exactly those numbers (dashboard/take_home.py measured_note; read back by the Recipe page's opener)
    assert f"accuracy = {cli['accuracy']!r}, size_bytes = {cli['size_bytes']}" in (recipe.description or "")

    # ONNX Runtime: the downloaded file on the workload's test inputs
    wl = resolve_workload(MODEL)
    x, y = wl.test.x.numpy(), wl.test.y.numpy()
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert any(n.op_type == "QuantizeLinear" for n in __import__("onnx").load(str(onnx_file)).graph.node)  # int8
    ort_pred = sess.run(None, {sess.get_inputs()[0].name: x})[0].argmax(-1)
    ort_acc = float(np.mean(ort_pred == y))
    _, model = load_bundle(bundle)
    with torch.no_grad():
        torch_pred = model(wl.test.x).argmax(-1).numpy()
    agree = float(np.mean(ort_pred == torch_pred))
    print(f"page {acc_text} / {size_text}; CLI {cli['accuracy']:.6f} / {cli['size_bytes']:,} B; bundle file "
          f"{bundle.stat().st_size:,} B; ONNX Runtime accuracy {ort_acc:.6f} on {len(y)} test images, agrees with "
          f"torch on {agree:.4f}; onnx file {onnx_file.stat().st_size:,} B; after {t_chosen:.1f} s the page showed "
          f"the choice, {t_onnx:.1f} s both files, {browser_s:.1f} s the CLI too, {time.perf_counter() - t0:.1f} s all")
    assert abs(ort_acc - page_acc) <= ORT_TOLERANCE, (ort_acc, acc_text)
    assert agree >= 0.98, agree


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
def test_a_bundle_opens_on_the_recipe_page_in_a_browser(server, browser, tmp_path):
    """A bundle that recorded its numbers, opened on the Recipe page in chromium at 1280x720: re-measured beside
    what it recorded, the same. (Must show #1, downloading both files from Explore, re-measuring the bundle with the
    CLI and running the ONNX file in ONNX Runtime: the test before this one.)"""
    from compression_core import measure, resolve_workload
    from compression_core.bundle import load_bundle

    steps = [{"kind": "prune_unstructured", "amount": 0.5}]
    _, model = load_bundle(make_bundle(steps))
    truth = measure(model, resolve_workload("digits-cnn"), with_latency=False)
    note = dashboard_module("take_home").measured_note({"accuracy": truth.accuracy, "size_bytes": truth.size_bytes},
                                                       {"metric": "accuracy"})
    bundle = tmp_path / "digits-cnn-prune50.bundle"
    bundle.write_bytes(make_bundle(steps, description=note))
    page = open_page(browser, server, 1280, 720, accept_downloads=True)
    go(page, "Recipe")
    page.locator(".st-key-r_bundle input[type=file]").set_input_files(str(bundle))
    same = page.get_by_text("Same numbers as the bundle recorded")
    same.wait_for(timeout=120_000)
    wait_idle(page)
    same.scroll_into_view_if_needed()
    assert page.get_by_text(f"size {truth.size_bytes:,} bytes").count()
    assert not page.evaluate(PROBLEMS_JS)
    save_screenshot(page, tmp_path, "take-home-opened-1280x720")
    page.close()


@pytest.mark.browser
@pytest.mark.slow
@needs_chromium
def test_tables_fit_and_many_layers_read_at_1280(server, browser, tmp_path):
    """At 1280x720: the Advise, Experiments (with a timing) and Search tables need no horizontal scroll, and the
    per-layer chart of minilm-topics (53 layers) has no overlapping labels."""
    page = open_page(browser, server, 1280, 720, accept_downloads=True)
    page.get_by_text(UNSTRUCTURED, exact=True).click()
    wait_idle(page)
    page.get_by_role("button", name="Save to history").click()
    wait_idle(page)
    page.get_by_role("button", name="Time before vs after").click()
    page.locator(".js-plotly-plot").filter(has_text="Latency per call").first.wait_for(timeout=240_000)  # a job
    wait_idle(page, 1000)
    clipped = {}
    for name in ("Advise", "Experiments", "Search"):
        go(page, name)
        if name == "Advise":
            page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=300_000)
        if name == "Search":
            page.get_by_label("Trials").fill("5")
            page.keyboard.press("Enter")
            wait_idle(page)
            page.get_by_role("button", name="Start search").click()
            page.locator('[data-testid="stSelectbox"]').filter(has_text="Front point").wait_for(timeout=600_000)
        wait_idle(page, 1500)
        widths = page.evaluate(TABLES_JS)
        assert widths, name
        if any(scroll > client + 1 for scroll, client in widths):
            clipped[name] = widths
        save_screenshot(page, tmp_path, f"table-{name.lower()}-1280x720")
    assert not clipped, clipped

    go(page, "Explore")
    choose(page, "Model", "minilm")
    choose(page, "Quantization kind", "int8 dynamic")
    chart = page.locator(".js-plotly-plot").filter(has_text="by block").first
    chart.wait_for(timeout=600_000)
    chart.scroll_into_view_if_needed()
    page.wait_for_timeout(1000)
    assert not page.evaluate(PROBLEMS_JS)
    save_screenshot(page, tmp_path, "minilm-layers-1280x720")
    page.close()
