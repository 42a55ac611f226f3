"""The Learn page "Compressing a language model" through AppTest, on a small GPT-2 scored by perplexity
(tests/ppl_workload.py: registered for the test only): five versions measured (fp32, int8 dynamic, int4 RTN, GPTQ,
AWQ), perplexity deltas shown as worse when they rise (inverse colours), and each version's generated text beside
the numbers, the same on a second run (greedy decoding)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from streamlit.proto.Metric_pb2 import Metric as MetricProto
from streamlit.testing.v1 import AppTest

from compression_core import workload as W

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ppl_workload as P  # noqa: E402


@pytest.fixture()
def test_lm():
    W.register_workload(P.LM_NAME, P.lm_workload, info=P.LM_INFO)
    try:
        yield P.LM_NAME
    finally:
        with W._LOCK:
            W._REGISTRY.pop(P.LM_NAME, None)
            W._CACHE.pop(P.LM_NAME, None)


@pytest.mark.slow  # transformers, a GPT-2 and GPTQ / AWQ calibration through AppTest: ~30 s on a loaded machine
def test_learn_language_page_compares_four_compressions_with_generated_text(test_lm):
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.switch_page("pages/learn_language.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="ll_model").set_value(test_lm).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.button(key="ll_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    rows = at.session_state["ll_rows"][(test_lm, at.selectbox(key="ll_prompt").value)]
    assert [r["method"] for r in rows] == ["fp32 (uncompressed)", "int8 dynamic", "int4 RTN (round to nearest)",
                                            "int4 GPTQ", "int4 AWQ"]
    assert all(isinstance(r["text"], str) for r in rows) and rows[0]["text"]
    assert all(r["size x"] < 1 for r in rows[1:]) and rows[0]["size x"] == 1
    metrics = {m.label: m for m in at.metric}
    red, green = MetricProto.MetricColor.Value("RED"), MetricProto.MetricColor.Value("GREEN")
    for r in rows[1:]:  # perplexity deltas: a rise is worse, drawn in the inverse colours (red up, green down)
        m = metrics[r["method"]]
        assert m.delta.endswith("% perplexity")
        assert m.proto.color == (red if m.delta.startswith("+") else green)
    texts = [t.value for t in at.text]
    assert rows[0]["text"] in texts and rows[3]["text"] in texts  # before and after, shown beside the numbers
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("perplexity, lower is better" in s for s in charts)
    again = P.lm_generate(W.resolve_workload(test_lm).model, at.selectbox(key="ll_prompt").value + "\n", 32)
    assert again == rows[0]["text"]  # greedy: the page's text is the model's deterministic continuation
