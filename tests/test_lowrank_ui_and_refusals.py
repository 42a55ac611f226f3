"""Three small fixes: quantize() refuses in one line like prune() (never a raw exception), the Sensitivity page
offers low-rank from the registry (sweep, fit, filled into Explore), and Explore's per-layer low-rank values come
from the rank ratio's own range (no 0.0, which fails validation)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from compression_core import CompressionError, technique
from compression_core.budget import FIT_PRUNE_LEVELS
from compression_core.prune import LowRankConfig
from compression_core.quantize import DynamicInt8Config, quantize
from compression_core.workload import resolve_workload

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")


def test_quantize_turns_a_raw_failure_into_one_line(monkeypatch):
    wl = resolve_workload("digits-mlp")

    def broken(model, cfg, ctx):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (1x3 and 4x5)\n  a second line")

    monkeypatch.setitem(technique._HANDLERS, DynamicInt8Config, broken)
    with pytest.raises(CompressionError) as e:
        quantize(wl.model, DynamicInt8Config(), wl)
    msg = str(e.value)
    assert msg.startswith("model: quantize_dynamic cannot be applied to this model (RuntimeError: mat1")
    assert "\n" not in msg and e.value.__cause__ is None


def test_lowrank_override_levels_are_valid_rank_ratios():
    if str(ROOT / "dashboard") not in sys.path:
        sys.path.insert(0, str(ROOT / "dashboard"))
    import techniques as T
    levels = T.override_levels(T.by_kind("lowrank"), FIT_PRUNE_LEVELS)
    assert levels and 0.0 not in levels and levels[-1] == 1.0 and 0.5 in levels
    for v in levels:  # every value the slider offers is one the config accepts
        LowRankConfig(overrides={"fc1": v})
    assert T.override_levels(T.by_kind("prune_unstructured"), FIT_PRUNE_LEVELS) == list(FIT_PRUNE_LEVELS)


@pytest.mark.slow  # the sweep, a fit and the Explore page through AppTest: ~10 s on a loaded machine
def test_sensitivity_page_offers_lowrank_and_fills_explore():
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page("pages/sensitivity.py").run()
    assert any(o.startswith("low-rank") for o in at.radio(key="s_technique").options)  # from the registry
    at.radio(key="s_technique").set_value("lowrank").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("factorized (low rank)" in s for s in specs) and any("rank kept" in s for s in specs)
    at.radio(key="s_target").set_value("file size (KB)").run()
    half_kb = at.number_input(key="s_kb_digits-cnn").value  # the default target: half the file
    at.number_input(key="s_kb_digits-cnn").set_value(float(int(half_kb * 2 * 0.8))).run()  # 80 % of the file
    at.button(key="s_fit").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    done = at.session_state["sens_fit"]
    assert done["fit"]["technique"] == "lowrank" and done["step"]["kind"] == "lowrank"
    ss = at.session_state
    assert ss["x_prune_digits-cnn"].startswith("low-rank")
    ovr = {k: v for k, v in done["step"]["overrides"].items()}
    assert ovr and all(0 < v < 1 for v in ovr.values())
    at.switch_page("pages/explore.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    step = at.session_state["current_recipe"]["steps"][0]
    assert step["kind"] == "lowrank" and step["overrides"] == {k: round(v, 3) for k, v in ovr.items()}
