"""A language model's vocabulary is not a set of classes: ``facts`` gives tiny-lm (GPT-2, perplexity) no class
list (it built 1,024 token "classes"), says its vocabulary size instead, and Explore offers it no per-class chart or
confusion matrix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dashboard_modules import dashboard_module

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")


@pytest.mark.slow  # loads transformers and the GPT-2 sample
@pytest.mark.filterwarnings("ignore")
def test_a_language_models_tokens_are_not_classes():
    facts = dashboard_module("state.workloads").facts
    lm = facts("tiny-lm")
    assert lm["language_model"] and lm["vocab_size"] == 1024
    assert lm["class_names"] == [] and lm["num_classes"] == 0 and not lm["classification"]
    digits = facts("digits-mlp")  # a classifier keeps its classes
    assert not digits["language_model"] and digits["classification"] and len(digits["class_names"]) == 10


@pytest.mark.slow  # AppTest with the GPT-2 sample
@pytest.mark.filterwarnings("ignore")
def test_explore_on_tiny_lm_shows_no_per_class_chart():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=600)
    at.run()
    at.selectbox(key="x_model").set_value("tiny-lm").run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    details = next(el for el in at.get("button_group") if el.key == "x_detail")
    assert details.options == ["Per layer", "Weights"]  # no "Per class" / "Confusion" for a perplexity workload
    for el in at.get("plotly_chart"):
        for trace in json.loads(el.proto.spec)["data"]:
            assert len(trace.get("x") or []) < 1024  # no chart with one bar per vocabulary token
