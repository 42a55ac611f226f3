"""Deep compression order: a pruned model quantizes with its zeros kept (masks folded first), and QAT keeps them."""

import pytest
import torch

import sample_models
from compression_core import (
    DynamicInt8Config, QATConfig, StaticInt8Config, UnstructuredPruneConfig, layer_stats, prune, quantize,
)


@pytest.mark.parametrize("name,cfg", [
    ("mnist-lenet300", DynamicInt8Config()),
    ("digits-cnn", StaticInt8Config()),
    ("digits-mlp", QATConfig(epochs=1)),
])
def test_pruned_model_quantizes_and_keeps_its_zeros(name, cfg):
    wl = sample_models.load(name)
    pruned = prune(wl.model, UnstructuredPruneConfig(amount=0.8), wl)
    q = quantize(pruned, cfg, wl)
    rows = {r.name: r for r in layer_stats(q)}
    before = {r.name: r for r in layer_stats(pruned)}
    for layer in ("fc1",):
        assert rows[layer].bits == 8
        # int8 rounding can only add zeros; pruned weights never come back
        assert rows[layer].sparsity >= before[layer].sparsity - 1e-9
    x = wl.test.x[:64]
    with torch.no_grad():
        agree = (q(x).argmax(1) == pruned(x).argmax(1)).float().mean()
    assert agree > 0.9
