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
import sample_models  # noqa: E402
from compression_core import StepContext, apply_step, effective_weight  # noqa: E402
from compression_core.prune import UnstructuredPruneConfig  # noqa: E402
from compression_core.quantize import DynamicInt8Config, FakeQuantConfig, Int4Config  # noqa: E402
from compression_core.quantize._common import fake_quantize_weight, qrange  # noqa: E402


@pytest.fixture(scope="module")
def lenet():
    return sample_models.load("mnist-lenet300")


def compress(sm, cfg):
    return apply_step(sm.model, cfg, StepContext(data=sm.as_workload(), seed=0))


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


def test_accuracy_bars_start_at_zero_and_state_the_drop():
    fig = charts.accuracy_chart({"accuracy": 0.978}, {"accuracy": 0.970, "simulated": False})
    assert fig.layout.yaxis.range[0] == 0
    assert "-0.80 points" in fig.layout.title.text
    assert "-0.80 pt" in fig.data[0].text[1]


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
