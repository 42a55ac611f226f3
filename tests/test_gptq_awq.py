"""Weight-only int8/int4/int3 by round-to-nearest, GPTQ and AWQ (WeightOnlyConfig): oracles are the existing int4
packing (RTN codes identical to Int4Linear.from_float), exact arithmetic (GPTQ with a diagonal Hessian is RTN;
AWQ with alpha = 0 is RTN), the layer-wise reconstruction error on the calibration inputs, and ONNX Runtime's
MatMulNBits running the same codes."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from torch import nn

import zoo
from compression_core import CompressionError, size_bytes
from compression_core import inputs as I
from compression_core.bundle import bundle_bytes, load_bundle
from compression_core.ort_deploy import deploy_onnx
from compression_core.ort_nbits import nbits_proto
from compression_core.ort_session import session
from compression_core.quantize import Int4Linear, WeightOnlyConfig, quant_config, quantize
from compression_core.quantize.awq import awq_scale
from compression_core.quantize.gptq import Hessian, gptq, layer_error
from compression_core.quantize.groupwise import clip_search, fake_quantize, pack_int3, rtn, unpack_int3
from compression_core.quantize.weight_only import AwqInt4Linear, Int3Linear, packed_layer
from compression_core.recipe import recipe_class
from compression_core.technique import StepContext, apply_step
from compression_core.workload import Workload


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _calibration(n_in: int = 256, rows: int = 2048, seed: int = 0) -> torch.Tensor:
    """Correlated inputs with a few large channels, as transformer activations are; ``seed`` draws other rows of
    the same distribution."""
    mix = torch.randn(32, n_in, generator=torch.Generator().manual_seed(100))
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 32, generator=g) @ mix  # low rank: strongly correlated
    x = x + 0.2 * torch.randn(rows, n_in, generator=g)
    x[:, :6] *= 15  # outlier channels
    return x  # (rows, in)


def _weight(n_out: int = 96, n_in: int = 256, seed: int = 1) -> torch.Tensor:
    return torch.randn(n_out, n_in, generator=torch.Generator().manual_seed(seed)) * 0.05


# ------------------------------------------------------------------------------------------------ storage
def test_pack_int3_layout_is_eight_codes_in_three_little_endian_bytes():
    packed = pack_int3(torch.tensor([1, -1, 3, -4, 0, 2, -2, 1], dtype=torch.int8))
    word = 1 | (7 << 3) | (3 << 6) | (4 << 9) | (0 << 12) | (2 << 15) | (6 << 18) | (1 << 21)
    assert packed.dtype == torch.uint8 and packed.tolist() == [word & 0xFF, (word >> 8) & 0xFF, word >> 16]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-4, 3), min_size=8, max_size=64), st.integers(1, 3))
def test_pack_int3_round_trip_is_exact(values, rows):
    values = values[: len(values) // 8 * 8]
    q = torch.tensor(values * rows, dtype=torch.int8).reshape(rows, len(values))
    assert torch.equal(unpack_int3(pack_int3(q)), q)
    with pytest.raises(ValueError):
        pack_int3(torch.tensor([4] * 8, dtype=torch.int8))


@pytest.mark.parametrize("group_size,symmetric", [(32, True), (64, False), (None, True), (None, False)])
def test_rtn_is_the_int4_packing_and_int3_int8_modules_store_their_codes(group_size, symmetric):
    torch.manual_seed(0)
    lin = nn.Linear(70, 9)  # 70 inputs: not a multiple of the group, padded
    ref = Int4Linear.from_float(lin, group_size, symmetric)
    qw = rtn(lin.weight, 4, group_size, symmetric)
    assert torch.equal(qw.codes, ref.codes()) and torch.equal(qw.scale, ref.scale)
    assert torch.equal(packed_layer(lin, qw).qweight, ref.qweight)
    assert torch.equal(qw.dequantize(), ref.dequantized_weight())
    for bits in (3, 8):
        qb = rtn(lin.weight, bits, group_size, symmetric)
        mod = packed_layer(lin, qb)
        assert mod.bits == bits and torch.equal(mod.codes(), qb.codes)
        assert int(qb.codes.min()) >= -(2 ** (bits - 1)) and int(qb.codes.max()) <= 2 ** (bits - 1) - 1
        x = torch.randn(4, 70)
        assert torch.allclose(mod(x), nn.functional.linear(x, qb.dequantize(), lin.bias), atol=1e-6)
    assert Int3Linear(70, 9, True, 64, True).qweight.numel() == 9 * 128 * 3 // 8  # 3 bits per code


# ---------------------------------------------------------------------------------------------------- GPTQ
@pytest.mark.parametrize("bits,group_size,symmetric,act_order", [(4, 64, True, False), (3, 32, False, False),
                                                                 (8, None, True, True), (4, 16, False, True)])
def test_gptq_with_a_diagonal_hessian_is_round_to_nearest_exactly(bits, group_size, symmetric, act_order):
    w = _weight(40, 100)
    h = torch.diag(torch.rand(100, generator=torch.Generator().manual_seed(2)) + 0.1)
    got = gptq(w, h, bits, group_size, symmetric, act_order=act_order, block=32)
    want = rtn(w, bits, group_size, symmetric)
    assert torch.equal(got.codes, want.codes) and torch.equal(got.scale, want.scale)


def test_gptq_reconstruction_error_is_below_rtn_and_the_gap_grows_at_3_bits():
    w, x = _weight(), _calibration()
    h = Hessian(x.shape[1])
    for part in x.split(300):  # fed batch by batch: the running mean equals the one-shot 2 X^T X / n
        h.add(part)
    assert torch.allclose(h.h, 2 * x.double().T @ x.double() / x.shape[0], rtol=1e-9, atol=1e-6)
    x_test = _calibration(seed=5)  # the same distribution, rows not seen in calibration
    gaps = {}
    for bits in (4, 3):
        e_rtn = layer_error(w, rtn(w, bits, 64).dequantize(), x)
        e_gptq = layer_error(w, gptq(w, h.h, bits, 64).dequantize(), x)
        assert e_gptq < 0.7 * e_rtn
        assert layer_error(w, gptq(w, h.h, bits, 64).dequantize(), x_test) < layer_error(w, rtn(w, bits, 64).dequantize(), x_test)
        gaps[bits] = e_rtn - e_gptq
    assert gaps[3] > gaps[4]


def test_awq_alpha_zero_is_rtn_and_the_search_beats_rtn_on_outlier_channels():
    w, x = _weight(), _calibration()
    s0, alpha0, _ = awq_scale(w, x, 4, 64, grid=1)  # grid 1: alpha in {0, 1}
    for bits in (4, 3):
        s, alpha, err = awq_scale(w, x, bits, 64)
        w_hat = fake_quantize(w * s.float(), bits, 64) / s.float()
        e_rtn = layer_error(w, rtn(w, bits, 64).dequantize(), x)
        assert 0 < alpha <= 1 and s.dtype == torch.float16
        assert layer_error(w, w_hat, x) < 0.9 * e_rtn
    flat = torch.ones(w.shape[1])  # equal activations: every alpha gives s = 1, i.e. round-to-nearest
    s1, _, _ = awq_scale(w, x, 4, 64, act=flat)
    assert torch.equal(s1, torch.ones_like(s1))


def test_awq_clipping_ratio_one_is_rtn_and_the_search_lowers_the_layer_error():
    w, x = _weight(), _calibration()
    w = w.clone()
    w[:, 100] *= 8  # one large weight per row stretches every group's range
    h = Hessian(x.shape[1])
    h.add(x)
    assert torch.equal(rtn(w, 3, 64, clip=torch.ones(96, 4)).codes, rtn(w, 3, 64).codes)
    for bits in (4, 3):
        ratio = clip_search(w, h.h, bits, 64)
        assert ratio.shape == (96, 4) and float(ratio.min()) >= 0.5 and float(ratio.max()) <= 1.0
        assert float(ratio.min()) < 1.0
        e_clip = layer_error(w, rtn(w, bits, 64, clip=ratio).dequantize(), x)
        assert e_clip < layer_error(w, rtn(w, bits, 64).dequantize(), x)


# ------------------------------------------------------------------------------------------ the technique
ZOO_MODELS = ["scaled_mlp", "token_transformer", "row_transformer"]


def _notes_error(notes: list[str]) -> tuple[float, float]:
    line = next(n for n in notes if "mean layer output error" in n)
    tail = line.split("mean layer output error ")[1]
    return float(tail.split()[0]), float(tail.split("round-to-nearest ")[1])


@pytest.mark.first_case_fast
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_models_shrink_keep_their_input_and_gptq_awq_beat_rtn_layer_by_layer(name):
    wl = zoo.ZOO[name]()
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    fp32 = size_bytes(wl.model)
    sizes = {}
    for bits in (4, 3):
        for method in ("rtn", "gptq", "awq"):
            ctx = StepContext(data=wl)
            q = apply_step(wl.model, WeightOnlyConfig(bits=bits, method=method, group_size=16), ctx)
            sizes[(bits, method)] = size_bytes(q)
            assert sizes[(bits, method)] < fp32
            assert wl.score(q) >= wl.score(wl.model) - 0.1
            if method != "rtn":
                err, err_rtn = _notes_error(ctx.notes)
                assert err < err_rtn, (bits, method, ctx.notes)
    assert sizes[(3, "rtn")] < sizes[(4, "rtn")] and sizes[(3, "gptq")] == sizes[(3, "rtn")]
    assert all(torch.equal(v, wl.model.state_dict()[k]) for k, v in before.items())


def test_real_bytes_shrink_about_8x_at_int4_and_10x_at_int3():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
    x = torch.randn(256, 512)
    wl = Workload(model=model, test=(x, torch.zeros(256, dtype=torch.long)), name="mlp512")
    fp32 = size_bytes(model)
    q4 = quantize(model, WeightOnlyConfig(bits=4, method="gptq", include_classifier=True), wl)
    q3 = quantize(model, WeightOnlyConfig(bits=3, method="gptq", include_classifier=True), wl)
    q8 = quantize(model, WeightOnlyConfig(bits=8, method="gptq", include_classifier=True), wl)
    buf = io.BytesIO()
    torch.save(q3.state_dict(), buf)
    assert size_bytes(q3) == len(buf.getvalue())  # the size is the saved file's bytes
    assert size_bytes(q4) < 0.15 * fp32 and size_bytes(q3) < 0.12 * fp32 and size_bytes(q8) < 0.28 * fp32
    assert q3[0].qweight.numel() == 512 * 512 * 3 // 8


def test_replay_round_trip_through_a_bundle_gives_identical_outputs():
    wl = zoo.scaled_mlp()
    for cfg in (WeightOnlyConfig(bits=3, method="gptq", group_size=32, act_order=True),
                WeightOnlyConfig(bits=4, method="awq", symmetric=False, overrides={"inp": 8}),
                WeightOnlyConfig(bits=8, method="rtn", group_size=None)):
        out = quantize(wl.model, cfg, wl)
        replayed = quantize(wl.model, cfg, None, replay=True)  # no calibration data: structure only
        assert [type(m) for m in out.modules()] == [type(m) for m in replayed.modules()]
        recipe = recipe_class().model_validate({"version": 1, "model": "tests/zoo.py:scaled_mlp", "steps": [cfg]})
        back_recipe, back = load_bundle(bundle_bytes(recipe, out), workload=wl)
        assert back_recipe.steps == [cfg]
        with torch.no_grad():
            assert torch.equal(back(wl.test.x[:32]), out(wl.test.x[:32]))
    assert type(out.inp).__name__ == "Int8WeightLinear"


def test_awq_layers_keep_their_input_scale_and_compute_with_it():
    wl = zoo.scaled_mlp()
    q = quantize(wl.model, WeightOnlyConfig(bits=4, method="awq", group_size=16), wl)
    layer = q.blocks[0].fc1
    assert isinstance(layer, AwqInt4Linear) and layer.input_scale.dtype == torch.float16
    x = torch.randn(5, layer.in_features)
    w = layer.codes().float().reshape(layer.out_features, -1, 16) * layer.scale.float().unsqueeze(2)
    expect = nn.functional.linear(x / layer.input_scale.float(), w.reshape(layer.out_features, -1), layer.bias)
    assert torch.allclose(layer(x), expect, atol=1e-5)


# ----------------------------------------------------------------------------------------------- ONNX Runtime
def test_matmulnbits_runs_the_same_codes_as_torch():
    """Exact at accuracy level 0 (float activations): int3 (in nibbles), int4, int8, asymmetric, per channel, AWQ."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(70, 64), nn.GELU(), nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 40),
                          nn.GELU(), nn.Linear(40, 10)).eval()
    x = torch.randn(64, 70)
    wl = Workload(model=model, test=(x, torch.zeros(64, dtype=torch.long)), calib=(x, torch.zeros(64, dtype=torch.long)),
                  name="mlp70")
    for cfg in (WeightOnlyConfig(bits=3, method="gptq", group_size=32, overrides={"2": 8}),
                WeightOnlyConfig(bits=4, method="awq", symmetric=False, group_size=16, include_classifier=True),
                WeightOnlyConfig(bits=4, method="rtn", group_size=None, include_classifier=True)):
        q = quantize(model, cfg, wl)
        proto = nbits_proto(q, x[:2], accuracy_level=0)
        assert {n.op_type for n in proto.graph.node if n.domain == "com.microsoft"} == {"MatMulNBits"}
        sess = session(proto.SerializeToString())
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        with torch.no_grad():
            want = q(x).numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_onnxruntime_engine_ships_matmulnbits_smaller_and_close():
    wl = zoo.scaled_mlp()
    q = quantize(wl.model, WeightOnlyConfig(bits=4, method="gptq", group_size=16), wl)
    ort = quantize(wl.model, WeightOnlyConfig(bits=4, method="gptq", group_size=16, engine="onnxruntime"), wl)
    assert type(ort).__name__ == "OrtModule" and size_bytes(ort) < size_bytes(wl.model)
    x = wl.test.x[:64]
    with torch.no_grad():
        diff = (ort(x) - q(x)).abs().max() / q(x).abs().max()
    assert float(diff) < 0.05  # accuracy level 4: int8 activations inside the kernel
    assert quantize(wl.model, WeightOnlyConfig(engine="onnxruntime"), None, replay=True).size_bytes == 0
    q3 = quantize(wl.model, WeightOnlyConfig(bits=3, method="awq", group_size=16), wl)
    proto = onnx.load_from_string(deploy_onnx(q3, wl))  # a torch-packed int3 model deploys with its own codes
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("MatMulNBits") == 5 and ops.count("MatMul") == 1  # 5 layers; the classifier stays float


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_input_is_one_line():
    wl = zoo.scaled_mlp()
    with pytest.raises(CompressionError, match=r"^method: method='gptq' needs the workload's calib split") as e:
        quantize(wl.model, WeightOnlyConfig(method="gptq"))  # no workload: no calibration data
    assert "\n" not in str(e.value)
    assert isinstance(quantize(wl.model, WeightOnlyConfig(method="rtn")).inp, Int4Linear)  # RTN needs none
    with pytest.raises(CompressionError, match=r"^bits: .*got 5") as e:
        quant_config({"kind": "quantize_weight_only", "bits": 5})
    assert "\n" not in str(e.value)
    with pytest.raises(ValidationError):
        WeightOnlyConfig(method="squeezellm")
    with pytest.raises(CompressionError, match=r"^overrides: no layer matches 'nope'"):
        quantize(wl.model, WeightOnlyConfig(overrides={"nope": 3}), wl)
    with pytest.raises(CompressionError, match=r"^targets: "):
        quantize(zoo.gru().model, WeightOnlyConfig(targets=("gru",)), zoo.gru())


def test_search_takes_the_calibrated_methods_when_asked():
    from compression_core.search import DEFAULT_METHODS, search

    assert "int4_gptq" not in DEFAULT_METHODS  # seconds per layer on a transformer: only when asked for
    r = search("digits-mlp", trials=8, batch_size=8, seed=0, methods=["none", "int4_gptq", "int3_awq"])
    methods = {p.settings["method"] for p in r.points}
    assert {"int4_gptq", "int3_awq"} <= methods <= {"none", "int4_gptq", "int3_awq"} and r.front
    assert all(p.accuracy > 0.85 for p in r.front)
