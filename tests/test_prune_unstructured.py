"""Unstructured and threshold pruning: exact sparsity (torch.nn.utils.prune as the oracle), input untouched,
one-line errors."""

import pytest
import torch
from pydantic import ValidationError
from torch.nn.utils import prune as torch_prune

import sample_models
from compression_core import CompressionError, clone_model, layer_stats
from compression_core.prune import ThresholdPruneConfig, UnstructuredPruneConfig, prune


@pytest.fixture(scope="module")
def lenet():
    return sample_models.load("mnist-lenet300")


def _zeros(model, name):
    return int((model.get_submodule(name).weight == 0).sum())


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_layer_scope_matches_torch_l1_unstructured_oracle(lenet):
    before = _state(lenet.model)
    out = prune(lenet.model, UnstructuredPruneConfig(amount=0.7, overrides={"fc2": 0.3}), lenet)
    oracle = clone_model(lenet.model)
    torch_prune.l1_unstructured(oracle.fc1, "weight", amount=0.7)
    torch_prune.l1_unstructured(oracle.fc2, "weight", amount=0.3)
    assert torch.equal(out.fc1.weight_mask, oracle.fc1.weight_mask)
    assert torch.equal(out.fc2.weight_mask, oracle.fc2.weight_mask)
    assert _zeros(out, "fc1") == round(0.7 * 784 * 300) and _zeros(out, "fc2") == round(0.3 * 300 * 100)
    assert not hasattr(out.fc3, "weight_mask")  # the classifier is left alone by default
    assert all(torch.equal(v, lenet.model.state_dict()[k]) for k, v in before.items())  # input unchanged
    assert not hasattr(lenet.model.fc1, "weight_mask")


def test_global_scope_exact_count_and_smallest_magnitudes(lenet):
    out = prune(lenet.model, UnstructuredPruneConfig(amount=0.9, scope="global"), lenet)
    n = 784 * 300 + 300 * 100
    assert _zeros(out, "fc1") + _zeros(out, "fc2") == round(0.9 * n)
    kept = torch.cat([out.fc1.weight[out.fc1.weight_mask == 1], out.fc2.weight[out.fc2.weight_mask == 1]]).abs()
    gone = torch.cat([lenet.model.fc1.weight[out.fc1.weight_mask == 0],
                      lenet.model.fc2.weight[out.fc2.weight_mask == 0]]).abs()
    assert gone.max() <= kept.min()  # one global magnitude cut
    assert _zeros(out, "fc1") / (784 * 300) != pytest.approx(_zeros(out, "fc2") / (300 * 100), abs=1e-3)


def test_random_baseline_exact_count_reproducible_and_differs_from_l1():
    wl = sample_models.load("digits-mlp")
    cfg = UnstructuredPruneConfig(amount=0.5, importance="random", include_classifier=True)
    a, b = prune(wl.model, cfg, seed=1), prune(wl.model, cfg, seed=1)
    l1 = prune(wl.model, UnstructuredPruneConfig(amount=0.5, include_classifier=True))
    for name, n in [("fc1", 64 * 128), ("fc2", 128 * 64), ("fc3", 64 * 10)]:
        assert _zeros(a, name) == round(0.5 * n)
        assert torch.equal(a.get_submodule(name).weight_mask, b.get_submodule(name).weight_mask)
    assert not torch.equal(a.fc1.weight_mask, l1.fc1.weight_mask)


def test_repeated_pruning_prunes_the_remaining_weights():
    wl = sample_models.load("digits-mlp")
    cfg = UnstructuredPruneConfig(amount=0.5, targets=["fc1"])
    twice = prune(prune(wl.model, cfg), cfg)
    assert _zeros(twice, "fc1") == 64 * 128 // 2 + 64 * 128 // 4
    assert {r.name: r.nonzero for r in layer_stats(twice)}["fc1"] == 64 * 128 // 4 + 128  # weights + bias


def test_threshold_removes_exactly_the_weights_below_it():
    wl = sample_models.load("digits-cnn")
    out = prune(wl.model, ThresholdPruneConfig(threshold=0.05, overrides={"conv1": 0.2}), wl)
    for name in ["conv1", "conv2", "fc1"]:
        w = wl.model.get_submodule(name).weight
        t = 0.2 if name == "conv1" else 0.05
        assert torch.equal(out.get_submodule(name).weight_mask, (w.abs() >= t).float())
        assert torch.equal(out.get_submodule(name).weight, w * (w.abs() >= t))
    std = prune(wl.model, ThresholdPruneConfig(threshold=1.0, scale="std", targets=["fc1"]), wl)
    assert _zeros(std, "fc1") == int((wl.model.fc1.weight.abs() < wl.model.fc1.weight.std()).sum())
    assert not hasattr(wl.model.fc1, "weight_mask")


@pytest.mark.parametrize("amount", [1.0, 1.5, -0.1])
def test_amount_out_of_range_is_rejected_naming_the_field(amount):
    with pytest.raises(ValidationError) as e:
        UnstructuredPruneConfig(amount=amount)
    assert e.value.errors()[0]["loc"] == ("amount",)


@pytest.mark.parametrize("kwargs, needle", [
    ({"targets": ["fc9"]}, "targets: unknown layer 'fc9'"),
    ({"targets": ["re:conv.*"]}, "targets: pattern matches no layer"),
    ({"overrides": {"fc9": 0.5}}, "overrides: 'fc9' is not one of the selected layers"),
    ({"overrides": {"fc1": 1.0}}, "overrides.fc1: must be in [0.0, 1.0), got 1.0"),
])
def test_bad_layers_are_one_line_errors(lenet, kwargs, needle):
    with pytest.raises(CompressionError) as e:
        prune(lenet.model, UnstructuredPruneConfig(amount=0.5, **kwargs), lenet)
    assert needle in str(e.value) and "\n" not in str(e.value)
