"""The Sensitivity page through AppTest: heatmap and curves drawn, a fit fills the Explore page's sliders."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


def _page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/sensitivity.py").run()
    assert not at.exception, at.exception
    return at


def _titles(at: AppTest) -> list[str]:
    return [c.proto.spec for c in at.get("plotly_chart")]


def test_heatmap_and_fit_fill_the_explore_sliders():
    at = _page()
    specs = _titles(at)
    assert any('"type":"heatmap"' in s and "ONE layer alone" in s for s in specs)
    assert any("Sensitivity curves" in s for s in specs)
    at.radio(key="s_target").set_value("file size (KB)").run()
    at.number_input(key="s_kb_digits-cnn").set_value(40.0).run()
    at.button(key="s_fit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    ss = at.session_state
    assert ss["x_prune_digits-cnn"] == "unstructured (weights)" and ss["x_prune_unstructured_scope"] == "layer"
    fitted = {k: ss[f"x_prune_unstructured_ovr_digits-cnn_{k}"] for k in ("conv1", "conv2", "fc1")}
    assert all(0 <= v <= 0.95 for v in fitted.values()) and any(v > 0 for v in fitted.values())
    assert ss["sens_fit"]["fit"]["size_bytes"] <= 40 * 1024
    assert any("Explore" in s.value for s in at.success)
    # the Explore page takes the fitted per-layer values and builds the recipe from them
    at.switch_page("pages/explore.py").run()
    assert not at.exception, at.exception
    step = at.session_state["current_recipe"]["steps"][0]
    assert step["kind"] == "prune_unstructured" and step["overrides"] == {k: v for k, v in fitted.items()}


def test_a_bits_fit_fills_explores_per_layer_bits():
    """A quantize fit is an explicit fake-quant step with per-layer bits: Explore takes it like a pruning fit."""
    at = _page()
    at.radio(key="s_technique").set_value("quantize").run()
    at.radio(key="s_target").set_value("max accuracy drop (points)").run()
    at.number_input(key="s_drop").set_value(1.0).run()
    at.button(key="s_fit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    done = at.session_state["sens_fit"]
    if done["step"] is None:  # every layer kept float: nothing to fill
        return
    assert at.session_state["x_quant"] == "simulated n-bit (fake quant)"
    at.switch_page("pages/explore.py").run()
    assert not at.exception, at.exception
    step = at.session_state["current_recipe"]["steps"][-1]
    assert step["kind"] == "fake_quant" and step["overrides"] == done["step"]["overrides"]


@pytest.mark.slow
def test_vit_head_chart_and_impossible_budget_is_one_line():
    at = _page()
    at.selectbox(key="s_model").set_value("digits-vit").run()
    assert not at.exception, at.exception
    assert any("Head importance" in s for s in _titles(at))
    at.number_input(key="s_kb_digits-vit").set_value(1.0).run()
    at.button(key="s_fit").click().run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("max_size_bytes:")
