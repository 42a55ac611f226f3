"""Structured pruning and shrink: exact unit counts, BatchNorm-aware masks, shrunk == masked outputs, heads really
removed, replay rebuilds the same shapes, layer functions, one-line errors."""

import io

import pytest
import torch
from torch import nn

import sample_models
from compression_core import CompressionError, StepContext, apply_step, measure
from compression_core.prune import (
    ShrinkConfig,
    StructuredPruneConfig,
    UnstructuredPruneConfig,
    prune,
    slice_bn,
    slice_conv_in,
    slice_conv_out,
    slice_heads,
    slice_linear_in,
    slice_linear_out,
)
from compression_core.prune.importance import head_scores
from zoo import randomize_bn


def _params(model):
    return sum(p.numel() for p in model.parameters())


def _out(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _masked_and_shrunk(name, **cfg):
    wl = sample_models.load(name)
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    masked = prune(wl.model, StructuredPruneConfig(**cfg), wl)
    shrunk = prune(masked, ShrinkConfig(), wl)
    assert all(torch.equal(v, wl.model.state_dict()[k]) for k, v in before.items())  # input unchanged
    assert any(k.endswith("_mask") for k in masked.state_dict())  # shrink did not touch its input either
    return wl, masked, shrunk


@pytest.mark.parametrize("name, unit, amount", [
    ("digits-mlp", "neurons", 0.5),
    ("digits-cnn", "channels", 0.5),
    ("mnist-cnn", "channels", 0.5),
    ("mnist-cnn", "neurons", 0.3),
    ("digits-vit", "heads", 0.5),
    ("digits-vit", "neurons", 0.25),
])
@pytest.mark.first_case_fast
def test_shrunk_model_equals_masked_model_and_is_smaller(name, unit, amount):
    wl, masked, shrunk = _masked_and_shrunk(name, unit=unit, amount=amount)
    x = wl.test.x
    assert (_out(masked, x) - _out(shrunk, x)).abs().max() <= 1e-5
    assert _params(shrunk) < _params(wl.model)
    assert not any(k.endswith(("_mask", "_orig")) for k in shrunk.state_dict())  # plain modules
    assert all(not m._forward_pre_hooks for m in shrunk.modules())
    buf = io.BytesIO()
    torch.save(shrunk.state_dict(), buf)  # saveable with plain tensors
    assert len(torch.load(io.BytesIO(buf.getvalue()), weights_only=True)) == len(shrunk.state_dict())


def test_channel_masks_are_exact_and_batchnorm_aware():
    wl = sample_models.load("digits-cnn")
    masked = prune(wl.model, StructuredPruneConfig(unit="channels", amount=0.5, overrides={"conv1": 0.25}), wl)
    for conv, bn, n, k in [("conv1", "bn1", 16, 4), ("conv2", "bn2", 32, 16)]:
        c, b = masked.get_submodule(conv), masked.get_submodule(bn)
        gone = c.weight.reshape(n, -1).abs().sum(1) == 0
        assert int(gone.sum()) == k
        assert torch.all(c.bias[gone] == 0) and torch.all(b.weight[gone] == 0) and torch.all(b.bias[gone] == 0)
        assert torch.all(b.weight[~gone] != 0)
    # the lowest-scoring coupled groups go first, scored as Torch-Pruning scores them (the oracle): group L1 over
    # conv2's filters, bn2's affine parameters and fc1's input columns
    import torch_pruning as tp

    dg = tp.DependencyGraph().build_dependency(wl.model, wl.test.x[:2])
    group = dg.get_pruning_group(wl.model.conv2, tp.prune_conv_out_channels, list(range(32)))
    scores = tp.importance.GroupMagnitudeImportance(p=1, normalizer=None)(group)
    gone = masked.conv2.weight.reshape(32, -1).abs().sum(1) == 0
    assert scores[gone].max() <= scores[~gone].min()


def test_head_pruning_really_removes_parameters():
    wl, masked, shrunk = _masked_and_shrunk("digits-vit", unit="heads", amount=0.5)
    for i, block in enumerate(shrunk.blocks):
        assert block.attn.n_heads == 2
        assert block.attn.qkv.weight.shape == (3 * 2 * 8, 32) and block.attn.proj.weight.shape == (32, 16)
        kept = head_scores(wl.model.blocks[i].attn, "l1").argsort(descending=True)[:2].sort().values
        ref = slice_heads(wl.model.blocks[i].attn, kept)
        assert torch.equal(ref.qkv.weight, block.attn.qkv.weight)
    assert _params(wl.model) - _params(shrunk) == 2 * 2 * (3 * 8 * 32 + 3 * 8 + 8 * 32)


def test_shrunk_cnn_has_fewer_flops_and_smaller_file():
    wl, masked, shrunk = _masked_and_shrunk("digits-cnn", unit="channels", amount=0.5)
    a, b = measure(masked, wl, with_latency=False), measure(shrunk, wl, with_latency=False)
    assert b.flops < 0.5 * a.flops and b.size_bytes < 0.6 * a.size_bytes
    assert b.accuracy == a.accuracy
    assert shrunk.conv1.out_channels == 8 and shrunk.bn1.num_features == 8 and shrunk.conv2.in_channels == 8
    assert shrunk.fc1.in_features == 16 * 16


@pytest.mark.slow
def test_replay_rebuilds_the_same_shapes_and_loads_the_saved_state():
    wl = sample_models.load("digits-vit")
    steps = [StructuredPruneConfig(unit="heads", amount=0.25), StructuredPruneConfig(unit="neurons", amount=0.5),
             ShrinkConfig()]
    real = wl.model
    for cfg in steps:
        real = apply_step(real, cfg, StepContext(data=wl))
    rebuilt = sample_models.build("digits-vit")
    for cfg in steps:
        rebuilt = apply_step(rebuilt, cfg, StepContext(data=wl, replay=True))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in real.state_dict().items()}
    rebuilt.load_state_dict(real.state_dict())
    assert torch.equal(_out(rebuilt, wl.test.x), _out(real, wl.test.x))


def test_layer_functions_match_the_dense_computation():
    torch.manual_seed(0)
    lin, conv, bn = nn.Linear(6, 5), nn.Conv2d(3, 4, 3, padding=1), randomize_bn(nn.BatchNorm2d(4))
    keep = torch.tensor([0, 2, 3])
    x = torch.randn(2, 6)
    assert torch.allclose(slice_linear_out(lin, keep)(x), lin(x)[:, keep])
    xin = torch.zeros(2, 6)
    xin[:, [1, 4]] = torch.randn(2, 2)
    assert torch.allclose(slice_linear_in(lin, [1, 4])(xin[:, [1, 4]]), lin(xin), atol=1e-6)
    img = torch.randn(2, 3, 5, 5)
    assert torch.allclose(slice_conv_out(conv, keep)(img), conv(img)[:, keep], atol=1e-6)
    img0 = img.clone()
    img0[:, 1] = 0
    assert torch.allclose(slice_conv_in(conv, [0, 2])(img0[:, [0, 2]]), conv(img0), atol=1e-6)
    bn.eval()
    feat = torch.randn(2, 4, 5, 5)
    assert torch.allclose(slice_bn(bn, keep)(feat[:, keep]), bn(feat)[:, keep])


def test_structured_masks_on_top_of_unstructured_are_folded_by_shrink():
    wl = sample_models.load("digits-mlp")
    sparse = prune(wl.model, UnstructuredPruneConfig(amount=0.5, include_classifier=True), wl)
    masked = prune(sparse, StructuredPruneConfig(unit="neurons", amount=0.5), wl)
    shrunk = prune(masked, ShrinkConfig(), wl)
    assert (_out(masked, wl.test.x) - _out(shrunk, wl.test.x)).abs().max() <= 1e-5
    assert shrunk.fc1.out_features == 64 and shrunk.fc2.in_features == 64 and shrunk.fc2.out_features == 32


@pytest.mark.parametrize("name, kwargs, needle", [
    ("digits-cnn", {"unit": "channels", "amount": 0.99}, "amount: 0.99 would prune every channel of 'conv1' (16)"),
    ("digits-cnn", {"unit": "channels", "overrides": {"conv2": 0.999}}, "every channel of 'conv2'"),
    ("digits-mlp", {"unit": "neurons", "targets": ["fc3"]}, "targets: 'fc3' is the classifier"),
    ("digits-mlp", {"unit": "neurons", "include_classifier": True}, "targets: 'fc3' is the classifier"),
    ("digits-mlp", {"unit": "neurons", "targets": ["fc7"]}, "targets: unknown layer 'fc7'"),
    ("digits-mlp", {"unit": "heads"}, "unit: 'heads' needs attention layers"),
    ("digits-vit", {"unit": "neurons", "targets": ["blocks.0.attn.qkv"]}, "they are attention heads of 'blocks.0.attn'"),
    ("digits-cnn", {"unit": "neurons", "targets": ["fc2"], "include_classifier": True}, "'fc2' is the classifier"),
    ("digits-mlp", {"unit": "channels"}, "unit: this model has no prunable channels"),
    ("digits-vit", {"unit": "neurons", "targets": ["embed"]}, "targets: the neurons of 'embed' cannot be removed"),
])
def test_bad_structured_configs_are_one_line_errors(name, kwargs, needle):
    wl = sample_models.load(name)
    with pytest.raises(CompressionError) as e:
        prune(wl.model, StructuredPruneConfig(**kwargs), wl)
    assert needle in str(e.value) and "\n" not in str(e.value)
