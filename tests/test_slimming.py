"""Network Slimming: the L1 penalty drives BatchNorm scales toward zero, the smallest scales are removed, the
slimmed model is shrunk, runs and is smaller; replay rebuilds the same shapes without training; input untouched."""

import pytest
import torch

import sample_models
from compression_core import CompressionError, SlimmingConfig, accuracy, prune
from compression_core.prune import slimming_masks


def _gammas(model):
    return torch.cat([m.weight.detach().abs() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])


@pytest.fixture(scope="module")
def cnn():
    return sample_models.load("digits-cnn")


@pytest.fixture(scope="module")
def trained(cnn):
    """Sparsity training with and without the penalty (amount 0, no shrink: only the training differs)."""
    torch.set_num_threads(1)
    with_pen = prune(cnn.model, SlimmingConfig(amount=0.0, shrink=False), cnn)
    without = prune(cnn.model, SlimmingConfig(amount=0.0, shrink=False, penalty=0.0), cnn)
    return with_pen, without


@pytest.mark.slow
def test_penalty_drives_bn_scales_toward_zero(trained):
    with_pen, without = trained
    small_with, small_without = int((_gammas(with_pen) < 1e-2).sum()), int((_gammas(without) < 1e-2).sum())
    assert small_with >= 3 and small_with > small_without
    assert float(_gammas(with_pen).sum()) < 0.5 * float(_gammas(without).sum())


@pytest.mark.slow
def test_slimmed_model_is_shrunk_runs_and_is_smaller(cnn):
    before = {k: v.clone() for k, v in cnn.model.state_dict().items()}
    out = prune(cnn.model, SlimmingConfig(amount=0.5), cnn)
    assert all(torch.equal(before[k], v) for k, v in cnn.model.state_dict().items())  # input untouched
    assert out.conv1.out_channels == 8 and out.conv2.out_channels == 16 and out.bn2.num_features == 16
    assert out.fc1.in_features == 16 * 16
    assert sum(p.numel() for p in out.parameters()) < sum(p.numel() for p in cnn.model.parameters())
    assert not any(k.endswith("_mask") for k in out.state_dict())
    assert accuracy(out, cnn.test.x, cnn.test.y) > 0.5  # runs and still classifies (before fine-tuning)


def test_channels_removed_are_the_smallest_scales(trained):
    with_pen, _ = trained
    masks = slimming_masks(with_pen, {"conv1": "bn1", "conv2": "bn2"}, 0.5, "layer")
    for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
        g = with_pen.get_submodule(bn).weight.detach().abs()
        keep = masks[conv].bool()
        assert int((~keep).sum()) == len(g) // 2
        assert g[~keep].max() <= g[keep].min()
    glob = slimming_masks(with_pen, {"conv1": "bn1", "conv2": "bn2"}, 0.5, "global")
    g = torch.cat([with_pen.bn1.weight.detach().abs(), with_pen.bn2.weight.detach().abs()])
    keep = torch.cat([glob["conv1"], glob["conv2"]]).bool()
    assert int((~keep).sum()) == 24 and g[~keep].max() <= g[keep].min()


def test_replay_builds_the_same_shapes_without_training(cnn):
    cfg = SlimmingConfig(amount=0.3, epochs=1)
    out = prune(cnn.model, cfg, cnn)
    rep = prune(cnn.model, cfg, cnn, replay=True)
    assert {k: v.shape for k, v in out.state_dict().items()} == {k: v.shape for k, v in rep.state_dict().items()}
    rep.load_state_dict(out.state_dict())
    x = cnn.test.x[:16]
    with torch.no_grad():
        assert torch.equal(rep(x), out(x))
    with pytest.raises(CompressionError, match="^scope:"):
        prune(cnn.model, SlimmingConfig(scope="global"), cnn, replay=True)


def test_models_without_batchnorm_are_a_one_line_error():
    wl = sample_models.load("digits-mlp")
    with pytest.raises(CompressionError) as e:
        prune(wl.model, SlimmingConfig(epochs=0), wl)
    assert str(e.value).startswith("targets:") and "\n" not in str(e.value)


def test_slimming_is_a_recipe_step():
    from compression_core.recipe import load_recipe, recipe_schema

    r = load_recipe({"model": "mnist-cnn", "steps": [{"kind": "network_slimming", "amount": 0.3}]})
    assert r.steps[0].kind == "network_slimming"
    assert "network_slimming" in str(recipe_schema())
