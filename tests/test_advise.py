"""Method guidance: the recommendation follows the model type and is supported by the model's own measurements;
the CLI and the dashboard page show it; the Explore page's threshold slider drives per-layer sparsity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import sample_models
from compression_core.advise import advise, model_type
from compression_core.cli import main

EXPECTED_TYPE = {"digits-mlp": "mlp", "digits-cnn": "cnn", "digits-vit": "transformer", "digits-lstm": "recurrent",
                 "mnist-lenet300": "mlp", "mnist-cnn": "cnn"}
APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")


@pytest.mark.first_case_fast
@pytest.mark.parametrize("name", sample_models.MODEL_NAMES)
def test_advice_is_supported_by_its_own_measurements(name):
    a = advise(name, min_run_time=0.02)
    assert a.model_type == EXPECTED_TYPE[name] == model_type(sample_models.load(name).model)
    by = {c.method: c for c in a.candidates}
    assert {"quantize_dynamic", "quantize_static"} <= set(by)
    for c in a.candidates:  # ratios are computed from the measured numbers, against the same run's fp32
        assert c.size_ratio == pytest.approx(c.size_bytes / a.baseline.size_bytes)
        assert c.drop_pt == pytest.approx(100 * (a.baseline.accuracy - c.accuracy))
        assert c.latency_ms > 0 and c.within_threshold == (c.drop_pt <= a.max_drop_pt)
    if a.recommended != "none":
        assert by[a.recommended].drop_pt <= a.max_drop_pt
        assert by[a.recommended].size_ratio < 1.0 or a.recommended == "quantize_static"
    else:
        assert not any(c.within_threshold for c in a.candidates)
    if a.model_type in ("recurrent", "transformer", "mlp") and by["quantize_dynamic"].within_threshold:
        assert a.recommended == "quantize_dynamic"
    if a.model_type == "cnn":
        static = by["quantize_static"]
        assert (a.recommended == "quantize_static") == static.within_threshold
        if not static.within_threshold:
            assert "quantize_qat" in by


def test_a_cnn_whose_static_drop_is_too_large_gets_qat_when_qat_meets_the_threshold():
    # a threshold just below the measured static drop forces the QAT branch; its own numbers decide the answer
    first = advise("digits-cnn", min_run_time=0.02)
    drop = first.candidate("quantize_static").drop_pt
    if drop <= 0:
        pytest.skip(f"static int8 lost nothing on this machine ({drop:+.2f} pt): no threshold below it")
    a = advise("digits-cnn", max_drop_pt=max(drop - 0.01, 0.0), min_run_time=0.02)
    qat = a.candidate("quantize_qat")
    assert qat is not None and a.recommended != "quantize_static"
    assert (a.recommended == "quantize_qat") == qat.within_threshold


@pytest.mark.slow  # QAT is trained too (static int8 loses nothing here, but the branch is measured): ~8 s
def test_a_method_the_library_refuses_is_named_not_an_error():
    """A residual CNN whose only Linear is its small classifier (examples/my_workload.py, brought as a workload):
    dynamic int8 is refused (the file would not shrink); the advice measures the others and names the refusal."""
    from compression_core.advise import render_advice

    a = advise(str(Path(__file__).resolve().parent.parent / "examples" / "my_workload.py") + ":workload",
               min_run_time=0.02)
    assert "quantize_dynamic" in a.skipped and "would not shrink" in a.skipped["quantize_dynamic"]
    assert a.candidate("quantize_dynamic") is None and a.candidate("quantize_static") is not None
    assert a.recommended in ("quantize_static", "quantize_qat", "none")
    assert "not applicable: " in render_advice(a)


@pytest.mark.slow  # loads MiniLM
def test_a_hugging_face_bert_is_a_transformer():
    """MiniLM has no hand-written attention module: its heads are found in the traced graph (it was called an MLP)."""
    from compression_core import inputs as I
    from compression_core.workload import resolve_workload

    wl = resolve_workload("minilm-topics")
    assert model_type(wl.model, I.head(wl.test.x, 2)) == "transformer"
    assert model_type(sample_models.load("digits-mlp").model, I.head(sample_models.load("digits-mlp").test.x, 2)) == "mlp"


def test_a_hugging_face_gpt2_is_a_transformer_and_traces_with_its_cache_on():
    """GPT-2's attention projections are transformers' Conv1D, not nn.Linear, and GPT2Config's default
    ``use_cache=True`` made Torch-Pruning's trace fail (the cache's concat of an empty past): Advise called it an MLP.
    Its heads are found by running it; the graph traces with the cache switched off for the trace only, finding the
    same heads as the same model built without a cache, and the model's flag is put back."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from compression_core.graph import attention_heads, build_graph

    def tiny(cache: bool):
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64, n_positions=32,
                                          bos_token_id=0, eos_token_id=0, use_cache=cache)).eval()

    model, x = tiny(True), torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    oracle = tiny(False)
    assert model_type(model, x) == model_type(oracle, x) == "transformer"
    heads = attention_heads(model, x)
    assert list(heads) == ["transformer.h.0.attn"] and heads["transformer.h.0.attn"].reason is None
    assert heads["transformer.h.0.attn"].size == 2 and heads["transformer.h.0.attn"].consumer.endswith("c_proj")
    g, want = build_graph(model, x, probe=False), build_graph(oracle, x, probe=False)
    assert list(g.units("heads")) == list(want.units("heads")) == ["transformer.h.0.attn"]
    assert torch.equal(g.heads["transformer.h.0.attn"].columns, want.heads["transformer.h.0.attn"].columns)
    assert set(g.units("neurons")) == set(want.units("neurons")) and g.units("neurons")
    assert model.config.use_cache is True
    assert model_type(model) == "mlp"  # without example inputs only its modules decide (no attention module)


def test_the_advice_table_names_a_lower_is_better_metric():
    """tiny-lm's advice printed 'test accuracy' and 'drop (pt)' over its perplexity: the table names the metric."""
    from compression_core.advise import Advice, Candidate, render_advice

    def cand(method, value, rise):
        return Candidate(method=method, label=method, accuracy=value, drop_pt=rise, size_bytes=100, size_ratio=1.0,
                         latency_ms=1.0, latency_ratio=1.0, within_threshold=True, seconds=0.0)

    a = Advice(model="lm", model_type="transformer", rule="quantize_dynamic", recommended="quantize_dynamic",
               reason="r", max_drop_pt=1.0, batch_size=32, threads=1, baseline=cand("fp32", 88.6, 0.0),
               candidates=[cand("quantize_dynamic", 88.7, 0.1)], metric="perplexity", higher_is_better=False)
    text = render_advice(a)
    assert "test perplexity (lower is better)" in text and "rise (%)" in text and "perplexity" in text.splitlines()[5]
    assert "accuracy" not in text and "drop (pt)" not in text
    assert "drop (pt)" in render_advice(a.model_copy(update={"metric": "accuracy", "higher_is_better": True}))


def test_cli_advise_json_and_errors(capsys):
    assert main(["advise", "--model", "digits-lstm", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model_type"] == "recurrent" and out["recommended"] == "quantize_dynamic"
    assert main(["advise", "--model", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: model: unknown 'nope'")


def test_advise_page_shows_the_advice_and_the_chart():
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/advise.py").run()
    assert not at.exception
    at.selectbox(key="adv_model").set_value("digits-lstm").run()
    assert not at.exception and not at.error
    assert "dynamic int8" in at.success[0].value
    assert len(at.get("plotly_chart")) == 1 and len(at.dataframe) == 1


def _layer_sparsity(at: AppTest) -> dict[str, float]:
    """Per-layer sparsity (%) bars of the Explore page's layer chart, by layer name."""
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if "Per-layer sparsity" in json.dumps(spec["layout"].get("title", "")):
            bars = spec["data"][0]
            return dict(zip(bars["x"], bars["y"]))
    raise AssertionError("no per-layer sparsity chart on the page")


def test_explore_threshold_slider_drives_per_layer_sparsity():
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.radio(key="x_prune_digits-cnn").set_value("threshold (|w| below a value)").run()
    wl = sample_models.load("digits-cnn")
    for t in (0.02, 0.1):
        at.number_input(key="x_prune_threshold_threshold").set_value(t).run()
        assert not at.exception and not at.error
        shown = _layer_sparsity(at)
        for layer in ("conv1", "conv2", "fc1"):  # the classifier fc2 is left alone by default
            w = wl.model.get_submodule(layer).weight
            b = wl.model.get_submodule(layer).bias
            expected = 100 * int((w.abs() < t).sum()) / (w.numel() + b.numel())
            assert shown[layer] == pytest.approx(expected, abs=1e-3), (t, layer)  # the chart rounds
        assert shown["fc2"] == pytest.approx(0.0)
