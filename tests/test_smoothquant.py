"""SmoothQuant (SmoothQuantConfig, a float step before int8 activations): the float model is unchanged, the
scales are the paper's formula on the calibration maxima, and on inputs with outlier channels dynamic int8 after
it is more accurate than without it."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

import zoo
from compression_core import CompressionError
from compression_core.bundle import bundle_bytes, load_bundle
from compression_core.quantize import DynamicInt8Config, SmoothedLinear, SmoothQuantConfig, quantize
from compression_core.quantize.smoothquant import smooth_scale
from compression_core.recipe import recipe_class
from compression_core.technique import StepContext, apply_step
from compression_core.workload import Workload


def _outliers() -> Workload:
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 10)).eval()
    x = torch.randn(512, 64, generator=g)
    x[:, :3] *= 60  # three outlier channels, as in LLM activations
    y = torch.zeros(512, dtype=torch.long)
    return Workload(name="outliers", model=model, test=(x, y), calib=(x[:128], y[:128]))


def test_float_model_is_unchanged_and_scales_follow_the_formula():
    wl = zoo.scaled_mlp()
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    ctx = StepContext(data=wl)
    out = apply_step(wl.model, SmoothQuantConfig(alpha=0.6, calib_samples=64), ctx)
    x = wl.test.x[:128]
    with torch.no_grad():
        assert torch.allclose(out(x), wl.model(x), rtol=1e-4, atol=1e-5)
    layer = out.blocks[0].fc2
    assert isinstance(layer, SmoothedLinear)
    seen = []  # oracle: the float layer's input maxima on the same 64 calibration items
    h = wl.model.blocks[0].fc2.register_forward_pre_hook(lambda m, a: seen.append(a[0].abs().amax(0)))
    with torch.no_grad():
        wl.model(wl.calib.x[:64])
    h.remove()
    s = smooth_scale(torch.stack(seen).amax(0), wl.model.blocks[0].fc2.weight, 0.6)
    assert torch.allclose(1.0 / layer.inv_scale, s, rtol=1e-5)
    assert torch.allclose(layer.linear.weight, wl.model.blocks[0].fc2.weight * s, rtol=1e-5)
    assert type(out.out) is nn.Linear  # the classifier is left alone by default
    assert any("file grew" in n and "quantize_dynamic" in n for n in ctx.notes)
    assert all(torch.equal(v, wl.model.state_dict()[k]) for k, v in before.items())


def test_dynamic_int8_after_smoothquant_is_more_accurate_on_outlier_channels():
    wl = _outliers()
    x = wl.test.x
    with torch.no_grad():
        ref = wl.model(x)
        plain = quantize(wl.model, DynamicInt8Config(), wl)
        smoothed = quantize(quantize(wl.model, SmoothQuantConfig(include_classifier=True), wl), DynamicInt8Config(), wl)
        err = lambda m: float((m(x) - ref).norm() / ref.norm())  # noqa: E731
        assert err(smoothed) < 0.6 * err(plain)
        none = quantize(quantize(wl.model, SmoothQuantConfig(alpha=0.0, include_classifier=True), wl),
                        DynamicInt8Config(), wl)  # alpha 0: s = 1 / max|W_j|, no activation information
        assert err(smoothed) < err(none)


def test_recipe_with_smoothquant_then_int8_round_trips_through_a_bundle():
    wl = zoo.scaled_mlp()
    steps = [SmoothQuantConfig(alpha=0.5), DynamicInt8Config()]
    model = wl.model
    for cfg in steps:
        model = quantize(model, cfg, wl)
    assert "quantized.dynamic" in type(model.blocks[0].fc1.linear).__module__  # int8 sees the smoothed Linear
    recipe = recipe_class().model_validate({"version": 1, "model": "tests/zoo.py:scaled_mlp", "steps": steps})
    _, back = load_bundle(bundle_bytes(recipe, model), workload=wl)
    with torch.no_grad():
        assert torch.equal(back(wl.test.x[:32]), model(wl.test.x[:32]))


def test_bad_input_is_one_line():
    with pytest.raises(ValidationError):
        SmoothQuantConfig(alpha=1.5)
    wl = zoo.scaled_mlp()
    with pytest.raises(CompressionError, match=r"^alpha: smoothquant needs the workload's calib split") as e:
        quantize(wl.model, SmoothQuantConfig())
    assert "\n" not in str(e.value)
    tok = zoo.token_transformer()  # every Linear sits in nn.TransformerEncoderLayer, which reads their weights
    with pytest.raises(CompressionError, match=r"^targets: smoothquant selected no Linear/Conv1D layer") as e:
        quantize(tok.model, SmoothQuantConfig(), tok)
    assert "\n" not in str(e.value)
