import copy
import io

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

import sample_models
from compression_core import CompressionError, accuracy, layer_stats, measure
from compression_core.quantize import FakeQuantConfig, FakeQuantWeight, StaticInt8Config, quantize, rebuild
from compression_core.quantize._common import fake_quantize_weight, qrange


@settings(max_examples=80, deadline=None)
@given(st.integers(2, 16), st.booleans(), st.integers(1, 6), st.integers(1, 20), st.floats(1e-3, 1e3), st.integers(0, 2**31))
@example(bits=16, per_channel=True, rows=4, cols=6, magnitude=5.75, seed=5)  # found: float32 rounding at 16 bits
def test_fake_quant_error_is_at_most_half_a_step(bits, per_channel, rows, cols, magnitude, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * magnitude
    deq, scale = fake_quantize_weight(w, bits, per_channel)  # scale: (rows, 1) or (1, 1)
    # Half a step, plus float32's own rounding of w / scale and code * scale: at 16 bits a code near 2**15 has
    # an ulp of 2**-8 of a step, so a purely relative slack on the step is not enough; a few ulps of |w| is.
    float_slack = 4 * torch.finfo(torch.float32).eps * w.abs()
    assert bool(((deq - w).abs() <= scale / 2 + float_slack).all())
    codes = torch.round(deq / scale)
    lo, hi = qrange(bits)
    assert bool((codes >= lo).all() and (codes <= hi).all())


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_fake_quant_matches_torchs_fake_quantize_op(bits):
    w = torch.randn(6, 3, 3, 3)
    deq, scale = fake_quantize_weight(w, bits, per_channel=True)
    lo, hi = qrange(bits)
    ref = torch.fake_quantize_per_channel_affine(w, scale.flatten(), torch.zeros(6, dtype=torch.int32), 0, lo, hi)
    assert torch.allclose(deq, ref, atol=1e-6)


def test_simulated_model_reports_bits_and_theoretical_size():
    wl = sample_models.load("digits-cnn")
    q = quantize(wl.model, FakeQuantConfig(bits=4, overrides={"conv1": 8, "re:fc.*": 6}), wl)
    rows = {r.name: r for r in layer_stats(q)}
    assert (rows["conv1"].bits, rows["conv2"].bits, rows["fc1"].bits, rows["fc2"].bits) == (8, 4, 6, 6)
    assert rows["conv2"].simulated and not rows["bn1"].simulated
    s = measure(q, wl, with_latency=False)
    assert s.simulated
    assert s.theoretical_size_bytes == sum(r.bits * r.params for r in s.layers) // 8
    assert s.theoretical_size_bytes < 0.25 * s.size_bytes  # the real file is still float32
    # wrapped, not swapped: the layer keeps its class, and its float original
    assert type(q.fc1) is torch.nn.Linear and q.fc1.weight.dtype == torch.float32
    assert any(isinstance(h, FakeQuantWeight) for h in q.fc1._forward_pre_hooks.values())
    assert torch.equal(q.fc1.weight_orig, wl.model.fc1.weight)
    assert sum(r.params for r in s.layers) == sum(p.numel() for p in wl.model.parameters())  # counted once


def test_weights_take_at_most_2_to_the_bits_values_per_channel():
    wl = sample_models.load("digits-mlp")
    q = quantize(wl.model, FakeQuantConfig(bits=3), wl)
    for row in q.fc2.weight:
        assert len(torch.unique(row)) <= 8


def test_activation_fake_quant_needs_calibration_and_works_with_it():
    wl = sample_models.load("digits-mlp")
    with pytest.raises(CompressionError, match="^activation_bits:.*calib"):
        quantize(wl.model, FakeQuantConfig(activation_bits=8))
    q = quantize(wl.model, FakeQuantConfig(bits=8, activation_bits=8), wl)
    assert float(q.fc1.act_scale) > 0
    t = wl.test
    assert accuracy(q, t.x, t.y) >= accuracy(wl.model, t.x, t.y) - 0.01


def test_lstm_weights_can_be_simulated():
    wl = sample_models.load("digits-lstm")
    q = quantize(wl.model, FakeQuantConfig(bits=4), wl)
    assert {r.name: r.bits for r in layer_stats(q)} == {"lstm": 4, "fc": 32}
    assert len(torch.unique(q.lstm.weight_hh_l0[0])) <= 16


@pytest.mark.parametrize("bad,field", [({"bits": 1}, "bits"), ({"bits": 17}, "bits"),
                                       ({"overrides": {"fc1": 40}}, "overrides.fc1"),
                                       ({"weights": "per_row"}, "weights")])
def test_bad_bits_are_one_line_errors_naming_the_field(bad, field):
    wl = sample_models.load("digits-mlp")
    with pytest.raises(CompressionError) as e:
        quantize(wl.model, {"kind": "fake_quant", **bad}, wl)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{field}:")


def test_fake_quant_round_trips_through_a_state_dict_and_deepcopy():
    wl = sample_models.load("digits-cnn")
    cfg = FakeQuantConfig(bits=4, activation_bits=8)
    q = quantize(wl.model, cfg, wl)
    x = wl.test.x[:64]
    with torch.no_grad():
        assert torch.equal(copy.deepcopy(q)(x), q(x))
        buf = io.BytesIO()
        torch.save(q.state_dict(), buf)
        buf.seek(0)
        r = rebuild(wl.model, cfg, torch.load(buf, weights_only=True), wl)
        assert torch.equal(r(x), q(x))
    assert {r.name: r.bits for r in layer_stats(copy.deepcopy(q))}["conv2"] == 4


@pytest.mark.first_case_fast
@pytest.mark.parametrize("cfg", [FakeQuantConfig(bits=8, include_classifier=True),
                                 FakeQuantConfig(bits=8, activation_bits=8, include_classifier=True),
                                 StaticInt8Config()], ids=["fake8", "fake8-act8", "static"])
def test_same_padding_conv_subclass_keeps_its_output_shape_and_accuracy(cfg):
    """Issue 14 item 8: fake quant and static int8 used to swap a Conv2d subclass for a plain class and lose its
    own forward (its padding): the output shrank and accuracy fell with no error."""
    import zoo

    wl = zoo.same_pad_cnn()
    q = quantize(wl.model, cfg, wl)
    x = wl.test.x
    with torch.no_grad():
        feats = wl.model.conv2(wl.model.bn1(wl.model.conv1(x[:4])))
    assert feats.shape[-2:] == (4, 4)  # what a plain Conv2d would get wrong (3x3 then 1x1)
    assert q(x[:5]).shape == wl.model(x[:5]).shape
    if isinstance(cfg, FakeQuantConfig):
        assert type(q.conv1) is zoo.Conv2dSame  # the user's own class, untouched
        with torch.no_grad():
            assert q.conv2(q.bn1(q.conv1(x[:4]))).shape == feats.shape
    assert accuracy(q, x, wl.test.y) >= accuracy(wl.model, x, wl.test.y) - 0.015


def test_rounded_weight_is_reused_between_forwards_and_follows_every_change_of_the_original():
    """Without a gradient the rounded weight computed before a forward is kept while the float original is unchanged
    (the same tensor, same version); an in-place change, a loaded state_dict or a training forward rounds again."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    FakeQuantWeight.wrap(layer, "weight", bits=4, per_channel=True)
    x = torch.randn(3, 16)
    with torch.no_grad():
        layer(x)
        first = layer.weight
        layer(x)
        assert layer.weight is first  # reused, not rounded again
        layer.weight_orig.mul_(2.0)  # in place: the version counter moves
        out = layer(x)
    assert layer.weight is not first
    assert torch.equal(layer.weight, fake_quantize_weight(layer.weight_orig.detach(), 4, True)[0])
    assert torch.allclose(out, x @ layer.weight.t() + layer.bias)
    state = {k: v * -1 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)
    assert torch.equal(layer.weight, fake_quantize_weight(state["weight_orig"], 4, True)[0])
    copied = copy.deepcopy(layer).eval()
    with torch.no_grad():
        copied.weight_orig.add_(1.0)
        copied(x)
    assert torch.equal(copied.weight, fake_quantize_weight(copied.weight_orig.detach(), 4, True)[0])
    layer.train()
    y = layer(x)  # a training forward: the straight-through weight, its gradient reaching the original
    y.sum().backward()
    assert layer.weight_orig.grad is not None and layer.weight_orig.grad.abs().sum() > 0
