"""Dashboard charts built from measured data: small payloads (binned on the server), honest axes, true counts;
and the one effective-weight accessor they read layers through."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dashboard"))

import charts  # noqa: E402
import explain  # noqa: E402
from compression_core import StepContext, apply_step, effective_weight, resolve_workload  # noqa: E402
from compression_core.prune import UnstructuredPruneConfig  # noqa: E402
from compression_core.quantize import DynamicInt8Config, FakeQuantConfig, Int4Config  # noqa: E402
from compression_core.quantize._common import fake_quantize_weight, qrange  # noqa: E402


@pytest.fixture(scope="module")
def lenet():
    return resolve_workload("mnist-lenet300")


def compress(wl, cfg):
    return apply_step(wl.model, cfg, StepContext(data=wl, seed=0))


def fc1(model) -> np.ndarray:
    return effective_weight(model.get_submodule("fc1")).float().numpy()  # (300, 784)


def zero_trace(fig, label: str):
    hits = [t for t in fig.data if t.name.startswith(f"{label}:") and "exact zeros" in t.name]
    assert len(hits) <= 1
    return hits[0] if hits else None


def test_pruned_histogram_is_small_and_shows_the_true_zero_count(lenet):
    before = fc1(lenet.model)
    after = fc1(compress(lenet, UnstructuredPruneConfig(amount=0.8)))
    fig = charts.weight_histogram(before, after, "fc1")
    assert len(fig.to_json()) < 30_000  # 235,200 raw weights would be several MB
    zeros = int((after == 0).sum())
    assert zeros >= 0.8 * after.size * 0.99  # the classifier is excluded, fc1 is pruned
    z = zero_trace(fig, "after")
    assert list(z.y) == [zeros] and f"{zeros:,}" in z.name and list(z.x) == [0.0]
    assert zero_trace(fig, "before") is None  # the trained baseline has no exact zeros
    for label, w in (("before", before), ("after", after)):  # every weight is in a bar, none twice
        shown = sum(int(np.sum(t.y)) for t in fig.data if t.name.startswith(f"{label}:"))
        assert shown == w.size
    lo, hi = min(before.min(), after.min()), max(before.max(), after.max())
    bins = [t for t in fig.data if "non-zero weights" in t.name]
    assert len(bins) == 2 and all(len(t.x) <= 100 for t in bins)
    assert min(t.x[0] for t in bins) >= lo and max(t.x[-1] for t in bins) <= hi  # one shared range
    assert fig.layout.title.text and fig.layout.xaxis.title.text and fig.layout.yaxis.title.text


def test_fake_quant_histogram_shows_the_levels(lenet):
    bits = 4
    model = compress(lenet, FakeQuantConfig(bits=bits))
    before, after = fc1(lenet.model), fc1(model)
    fig = charts.weight_histogram(before, after, "fc1")
    assert len(fig.to_json()) < 30_000
    level_trace = next(t for t in fig.data if "levels" in t.name)
    # oracle: per-channel symmetric codes; divided by each channel's max |w| every channel lands on code / qmax
    deq, scale = fake_quantize_weight(torch.from_numpy(before), bits, per_channel=True)
    codes = torch.round(deq / scale).numpy()  # (300, 784) integers
    qmax = qrange(bits)[1]
    expected = np.unique(codes[codes != 0]) / np.abs(codes).max(1).max()
    assert np.allclose(np.sort(level_trace.x), expected, atol=1e-5)
    assert len(level_trace.x) <= 2 ** bits - 1 and np.abs(codes).max() == qmax
    assert "per-channel" in fig.layout.xaxis.title.text
    zeros = int((after == 0).sum())
    assert int(np.sum(level_trace.y)) + zeros == after.size
    assert list(zero_trace(fig, "after").y) == [zeros]


def test_per_tensor_levels_are_the_distinct_values():
    rng = np.random.default_rng(0)
    before = rng.normal(0, 0.1, (64, 100)).astype(np.float32)
    scale = np.abs(before).max() / 7
    after = (np.clip(np.round(before / scale), -7, 7) * scale).astype(np.float32)  # 4-bit, one scale
    fig = charts.weight_histogram(before, after, "w")
    levels = next(t for t in fig.data if "levels" in t.name)
    values, counts = np.unique(after[after != 0], return_counts=True)
    assert np.array_equal(levels.x, values) and np.array_equal(levels.y, counts)
    assert fig.layout.xaxis.title.text == "weight value"


def test_small_unquantized_layer_is_binned_not_taken_for_levels():
    before = np.random.default_rng(1).normal(0, 0.1, (16, 9)).astype(np.float32)  # 144 distinct values
    after = before.copy()
    fig = charts.weight_histogram(before, after, "conv1")
    assert not any("levels" in t.name for t in fig.data)


def test_accuracy_bars_start_at_zero_and_state_the_drop_without_clipping():
    fig = charts.accuracy_chart({"accuracy": 0.978}, {"accuracy": 0.970, "simulated": True})
    assert fig.layout.yaxis.range[0] == 0
    assert fig.layout.title.text == "Test accuracy (%)"  # short: never cut off as "(after: sim"
    assert "-0.80 points" in fig.layout.title.subtitle.text and "simulated" in fig.layout.title.subtitle.text
    assert list(fig.data[0].text) == ["97.80 %", "97.00 %"]
    raw = charts.accuracy_chart({"accuracy": 0.5}, {"accuracy": 0.25}, metric="fidelity", percent=False)
    assert raw.layout.title.text == "Test fidelity" and "-0.2500" in raw.layout.title.subtitle.text


def test_size_labels_do_not_run_together():
    """Horizontal bars, one pair per kind of file; labels are numbers only (the axis says KB) at the end of their
    own bar, so "142.3 KB142.5 KB" cannot happen."""
    before = {"size_bytes": 145_700, "sparse_size_bytes": None, "theoretical_size_bytes": None}
    after = {"size_bytes": 145_900, "sparse_size_bytes": 30_000, "theoretical_size_bytes": None}
    fig = charts.size_chart(before, after)
    assert [t.name for t in fig.data] == ["before", "after"]
    assert list(fig.data[1].y) == ["dense file", "sparse / packed"] and fig.data[1].orientation == "h"
    for t in fig.data:
        assert all("KB" not in label and len(label) <= 8 for label in t.text)
    assert fig.layout.xaxis.title.text == "size (KB)" and fig.layout.xaxis.range[1] > 1.2 * 145_900 / 1024


def test_histogram_log_axis_has_decade_ticks_only():
    rng = np.random.default_rng(0)
    before = rng.normal(0, 0.1, (100, 100)).astype(np.float32)
    after = before.copy()
    after[np.abs(after) < 0.1] = 0
    fig = charts.weight_histogram(before, after, "w")
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis.dtick == 1  # 1, 10, 100: not "5 2 1000 5 2"


def test_softmax_legend_names_are_distinct():
    logits = np.array([3.0, 1.0, 0.2])
    assert [t.name for t in charts.learn_softmax(logits, 1.0, ["a", "b", "c"]).data] == ["T = 1 (plain softmax)"]
    names = [t.name for t in charts.learn_softmax(logits, 4.0, ["a", "b", "c"]).data]
    assert names == ["T = 1 (plain softmax)", "T = 4 (soft targets)"]


def test_dtype_chart_shows_the_overflow_bar():
    rows = [{"dtype": "fp16", "max_abs_error": float("inf"), "non-finite values": 12},
            {"dtype": "bf16", "max_abs_error": 300.0, "non-finite values": 0},
            {"dtype": "int8", "max_abs_error": 1e-3, "non-finite values": 0}]
    fig = charts.learn_dtype_errors(rows)
    bar = fig.data[0]
    assert list(bar.x) == ["fp16", "bf16", "int8"]
    assert bar.y[0] > max(bar.y[1:]) and "overflow" in bar.text[0]  # drawn, not dropped from the log axis
    assert 10 ** fig.layout.yaxis.range[1] > bar.y[0] and bar.cliponaxis is False


def test_latency_chart_shows_spread_and_verdict():
    c = {"runtime": "torch", "batch_size": 32, "threads": 1, "rounds": 15, "before_ms": 1.0, "before_low_ms": 0.9,
         "before_high_ms": 1.2, "after_ms": 1.05, "after_low_ms": 0.95, "after_high_ms": 1.3, "ratio": 1.04,
         "ratio_low": 0.97, "ratio_high": 1.1, "verdict": "no measurable difference", "tolerance": 0.03}
    fig = charts.latency_chart([c])
    before = fig.data[0]
    assert abs(before.error_y.array[0] - 0.2) < 1e-9 and abs(before.error_y.arrayminus[0] - 0.1) < 1e-9
    assert "no measurable difference" in fig.layout.annotations[0].text
    assert fig.layout.title.text.startswith("Latency per call (ms): batch 32, 1 thread")


def test_learn_prune_histogram_is_binned(lenet):
    before = fc1(lenet.model)
    after = fc1(compress(lenet, UnstructuredPruneConfig(amount=0.5)))
    fig = charts.learn_prune_histogram(before, after)
    assert len(fig.to_json()) < 30_000
    pruned = next(t for t in fig.data if t.name.startswith("pruned"))
    assert int(np.sum(pruned.y)) == int((after == 0).sum())


# ------------------------------------------------------------------------------------- effective_weight
def test_effective_weight_applies_masks_and_dequantizes(lenet):
    pruned = compress(lenet, UnstructuredPruneConfig(amount=0.5)).get_submodule("fc1")
    assert torch.equal(effective_weight(pruned), pruned.weight_orig * pruned.weight_mask)  # torch's own product

    dyn = compress(lenet, DynamicInt8Config()).get_submodule("fc1")
    assert torch.equal(effective_weight(dyn), dyn.weight().dequantize())

    int4 = compress(lenet, Int4Config()).get_submodule("fc1")
    assert torch.equal(effective_weight(int4), int4.dequantized_weight())

    assert effective_weight(nn.ReLU()) is None
    plain = nn.Linear(3, 2)
    w = effective_weight(plain)
    assert torch.equal(w, plain.weight) and not w.requires_grad


# ------------------------------------------------------------------------------------------------ explain
def _layers(*rows):
    return [{"name": n, "type": t, "params": p} for n, t, p in rows]


def test_shrunk_only_when_units_were_removed():
    before = {"params": 38_378, "nonzero_params": 38_378, "size_bytes": 159_000,
              "layers": _layers(("conv1", "Conv2d", 160), ("bn1", "BatchNorm2d", 32), ("conv2", "Conv2d", 4640),
                                ("bn2", "BatchNorm2d", 64), ("fc1", "Linear", 32832), ("fc2", "Linear", 650))}
    folded = {"params": 38_282, "nonzero_params": 19_000, "size_bytes": 50_000, "simulated": False,
              "layers": _layers(("conv1", "ConvReLU2d", 160), ("conv2", "ConvReLU2d", 4640), ("fc1", "LinearReLU", 32832),
                                ("fc2", "Linear", 650))}
    text = " ".join(explain.why_size(before, folded, ["sparse", "int8"]))
    assert "BatchNorm folded" in text and "bn1, bn2 (96 parameters)" in text and "Shrunk" not in text
    shrunk = {"params": 18_394, "nonzero_params": 18_394, "size_bytes": 76_000, "simulated": False,
              "layers": _layers(("conv1", "Conv2d", 80), ("bn1", "BatchNorm2d", 16), ("conv2", "Conv2d", 1168),
                                ("bn2", "BatchNorm2d", 32), ("fc1", "Linear", 16448), ("fc2", "Linear", 650))}
    text = " ".join(explain.why_size(before, shrunk, ["dense", "shrunk"]))
    assert "Shrunk" in text and "conv1, conv2, fc1" in text and "BatchNorm folded" not in text


def test_speed_words_follow_the_verdict():
    class Cpu:
        def int8_sentence(self):
            return "CPU-INT8-FACT."

        def half_sentence(self):
            return "CPU-HALF-FACT."

    c = {"runtime": "torch", "batch_size": 1, "threads": 1, "rounds": 15, "before_ms": 0.1, "before_low_ms": 0.09,
         "before_high_ms": 0.12, "after_ms": 0.1, "after_low_ms": 0.09, "after_high_ms": 0.12, "ratio": 0.99,
         "ratio_low": 0.95, "ratio_high": 1.04, "verdict": "no measurable difference", "tolerance": 0.03}
    text = " ".join(explain.why_speed([c], ["int8"], Cpu()))
    assert "**no measurable difference**" in text and "faster" not in text.split("no measurable")[0]
    assert "CPU-INT8-FACT." in text  # the CPU sentence comes from the detected facts
    fast = {**c, "ratio": 0.5, "ratio_low": 0.45, "ratio_high": 0.55, "verdict": "faster"}
    assert len(explain.why_speed([fast], ["int8"], Cpu())) == 1  # no "not faster?" when it is faster
