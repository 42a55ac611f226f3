import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sample_models
from compression_core import CompressionError, accuracy, layer_stats, measure, size_bytes
from compression_core.quantize import Int4Config, Int4Linear, Int8WeightLinear, pack_int4, quantize, unpack_int4


def test_pack_layout_is_two_nibbles_per_byte_low_first():
    packed = pack_int4(torch.tensor([1, -1, 7, -8], dtype=torch.int8))
    assert packed.dtype == torch.uint8 and packed.tolist() == [0xF1, 0x87]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-8, 7), min_size=1, max_size=64), st.integers(1, 3))
def test_pack_unpack_round_trip_is_exact(values, rows):
    values = values + values[:1] if len(values) % 2 else values
    q = torch.tensor(values * rows, dtype=torch.int8).reshape(rows, len(values))
    packed = pack_int4(q)
    assert packed.shape == (rows, len(values) // 2)
    assert torch.equal(unpack_int4(packed), q)


def test_pack_rejects_out_of_range_codes():
    with pytest.raises(ValueError):
        pack_int4(torch.tensor([8, 0], dtype=torch.int8))


@pytest.mark.parametrize("group_size,symmetric", [(32, True), (64, False), (None, True), (None, False)])
def test_int4_linear_error_is_at_most_half_a_step_per_group(group_size, symmetric):
    torch.manual_seed(0)
    lin = nn.Linear(70, 9)  # 70 inputs: not a multiple of the group, padded
    q = Int4Linear.from_float(lin, group_size, symmetric)
    assert q.qweight.dtype == torch.uint8 and q.qweight.numel() == 9 * q.n_groups * q.group_size // 2
    w = lin.weight.detach()
    err = (q.dequantized_weight() - w).abs()  # (9, 70)
    step = q.scale.float().repeat_interleave(q.group_size, dim=1)[:, :70]  # scale of each element's group
    assert bool((err <= step / 2 + 1e-6).all())
    x = torch.randn(5, 70)
    assert torch.allclose(q(x), nn.functional.linear(x, q.dequantized_weight(), lin.bias))


def test_int4_lenet300_file_is_about_an_eighth_and_accurate():
    wl = sample_models.load("mnist-lenet300")
    q = quantize(wl.model, Int4Config(), wl)
    assert size_bytes(q) <= 0.16 * size_bytes(wl.model)
    t = wl.test
    assert accuracy(q, t.x, t.y) >= accuracy(wl.model, t.x, t.y) - 0.02
    rows = {r.name: r for r in layer_stats(q)}
    assert rows["fc1"].bits == 4 and rows["fc1"].dtype == "int4" and rows["fc3"].bits == 32  # classifier left
    s = measure(q, wl, with_latency=False)
    assert not s.simulated and s.flops == 2 * (784 * 300 + 300 * 100 + 100 * 10)


def test_mixed_overrides_first_and_last_layer_8_bit_the_rest_4_bit():
    wl = sample_models.load("digits-mlp")
    q = quantize(wl.model, Int4Config(overrides={"fc1": 8, "fc3": 8}), wl)
    assert type(q.fc1) is Int8WeightLinear and type(q.fc2) is Int4Linear and type(q.fc3) is Int8WeightLinear
    assert [r.bits for r in layer_stats(q)] == [8, 4, 8]


def test_conv_is_not_supported_and_unknown_override_is_named():
    wl = sample_models.load("digits-cnn")
    with pytest.raises(CompressionError, match=r"^targets: layer 'conv1' is Conv2d; quantize_int4 supports Linear"):
        quantize(wl.model, Int4Config(targets=("conv1",)), wl)
    with pytest.raises(CompressionError, match=r"^overrides: no layer matches 'fc9'"):
        quantize(wl.model, Int4Config(overrides={"fc9": 8}), wl)
