"""Dynamic int8 with per-channel weights and full-range (8-bit) activations (DynamicInt8Config weights= /
activations=, issue 25 item 4): torch's own kernels are the oracle; "auto" follows the CPU's int8 dot-product
instructions."""

from __future__ import annotations

import torch
from torch import nn

import zoo
from compression_core.bundle import bundle_bytes, load_bundle
from compression_core.cpu import cpu_has_int8_dot
from compression_core.quantize import DynamicInt8Config, quantize
from compression_core.quantize import dynamic as dynamic_module
from compression_core.quantize.ao_eager import FullRangeDynamicLinear
from compression_core.recipe import recipe_class


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32)).eval()
    with torch.no_grad():  # rows of very different magnitudes: one scale per tensor wastes most of the grid
        model[0].weight.mul_(torch.logspace(-2, 0, 128).unsqueeze(1))
    return model


def test_per_channel_weights_have_one_scale_per_row_and_are_more_accurate():
    model = _model()
    x = torch.randn(256, 64)
    per_tensor = quantize(model, DynamicInt8Config())
    per_channel = quantize(model, DynamicInt8Config(weights="per_channel"))
    w = per_channel[0].weight()
    assert w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) and w.q_per_channel_scales().numel() == 128
    assert per_tensor[0].weight().qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric)
    with torch.no_grad():  # the first layer's outputs, each channel's error relative to its own size
        ref = model[0](x)
        err = lambda m: float(((m[0](x) - ref).norm(dim=0) / ref.norm(dim=0)).mean())  # noqa: E731
        assert err(per_channel) < 0.5 * err(per_tensor)


def test_full_range_activations_call_torch_kernel_without_reduce_range(monkeypatch):
    model = _model()
    x = torch.randn(16, 64)
    full = quantize(model, DynamicInt8Config(activations="full"))
    assert type(full[0]) is FullRangeDynamicLinear and type(quantize(model, DynamicInt8Config())[0]) is not FullRangeDynamicLinear
    with torch.no_grad():
        want = torch.ops.quantized.linear_dynamic(x, full[0]._packed_params._packed_params, reduce_range=False)
        assert torch.equal(full[0](x), want)
    for has_dot in (True, False):
        monkeypatch.setattr(dynamic_module, "cpu_has_int8_dot", lambda: has_dot)
        auto = quantize(model, DynamicInt8Config(activations="auto"))
        assert (type(auto[0]) is FullRangeDynamicLinear) == has_dot


def test_full_range_is_at_least_as_accurate_where_the_cpu_has_int8_dot_products():
    if not cpu_has_int8_dot():
        return  # 8-bit activations may saturate fbgemm's int16 sums here: nothing to compare
    model = _model()
    x = torch.randn(256, 64)
    with torch.no_grad():
        ref = model(x)
        err = lambda cfg: float((quantize(model, cfg)(x) - ref).norm() / ref.norm())  # noqa: E731
        assert err(DynamicInt8Config(weights="per_channel", activations="full")) < err(DynamicInt8Config(weights="per_channel"))


def test_bundle_round_trip_keeps_the_options():
    wl = zoo.scaled_mlp()
    cfg = DynamicInt8Config(weights="per_channel", activations="full")
    out = quantize(wl.model, cfg, wl)
    recipe = recipe_class().model_validate({"version": 1, "model": "tests/zoo.py:scaled_mlp", "steps": [cfg]})
    _, back = load_bundle(bundle_bytes(recipe, out), workload=wl)
    assert type(back.inp) is FullRangeDynamicLinear
    with torch.no_grad():
        assert torch.equal(back(wl.test.x[:32]), out(wl.test.x[:32]))
