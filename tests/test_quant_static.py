"""Static int8 and QAT in graph mode: fused wherever conv-BN-ReLU occurs (not only in an nn.Sequential), residual
adds in int8, a Conv2d subclass's own forward kept, oracle = torch's own FX API; the eager fallback for untraceable
models and its one-line refusal."""

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import sample_models
import zoo
from compression_core import CompressionError, accuracy, size_bytes
from compression_core.measure import layer_stats
from compression_core.quantize import QATConfig, StaticInt8Config, quantize, rebuild, safe_state_dict
from compression_core.quantize.ao_eager import QuantWrapper
from compression_core.quantize.ao_engine import qconfig


def _acc(model, wl):
    return accuracy(model, wl.test.x, wl.test.y)


def _ops(q):
    return [n.target for n in q.graph.nodes if n.op == "call_function"]


def _reloaded(q, wl, cfg):
    """The model rebuilt from its safe state_dict the way bundles do (replay, then load)."""
    buf = io.BytesIO()
    torch.save(safe_state_dict(q), buf)
    buf.seek(0)
    return rebuild(wl.model, cfg, torch.load(buf, weights_only=True), wl)


def test_static_int8_digits_cnn_fuses_conv_bn_relu_and_is_small_and_accurate():
    wl = sample_models.load("digits-cnn")
    q = quantize(wl.model, StaticInt8Config(), wl)
    assert isinstance(q, fx.GraphModule)
    assert type(q.conv1).__name__ == "ConvReLU2d" and type(q.conv1).__module__.startswith("torch.ao.nn.intrinsic.quantized")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())  # BN folded into the convs
    assert _ops(q).count(torch.quantize_per_tensor) == 1  # one int8 region from input to logits
    assert size_bytes(q) <= 0.35 * size_bytes(wl.model)
    assert _acc(q, wl) >= _acc(wl.model, wl) - 0.01


def test_static_minmax_per_tensor_equals_torchs_own_fx_ptq():
    """Oracle: torch's own prepare_fx / calibrate / convert_fx with the same qconfig."""
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    wl = sample_models.load("digits-mlp")
    cfg = StaticInt8Config(observer="minmax", weights="per_tensor", calib_batches=1)
    ours = quantize(wl.model, cfg, wl)
    mapping = QConfigMapping().set_global(qconfig("minmax", "per_tensor", 8))
    ref = prepare_fx(sample_models.load("digits-mlp").model.eval(), mapping, (wl.calib.x[:2],))
    with torch.no_grad():
        ref(wl.calib.x)
    ref = convert_fx(ref)
    x = wl.test.x
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    assert ours.fc1.weight().qscheme() == torch.per_tensor_affine


def test_per_channel_weights_and_restricted_weight_bits():
    wl = sample_models.load("digits-mlp")
    q = quantize(wl.model, StaticInt8Config(weight_bits=4), wl)
    w = q.fc2.weight()
    assert w.qscheme() == torch.per_channel_affine
    ints = w.int_repr()
    assert int(ints.min()) >= -8 and int(ints.max()) <= 7


def test_vit_linear_layers_are_int8_and_attention_stays_float():
    wl = sample_models.load("digits-vit")
    q = quantize(wl.model, StaticInt8Config(observer="minmax"), wl)
    linears = [n for n, m in wl.model.named_modules() if isinstance(m, nn.Linear)]
    assert all(type(q.get_submodule(n)).__name__ == "Linear" and "quantized" in type(q.get_submodule(n)).__module__
               and "Reference" not in repr(q.get_submodule(n)) for n in linears)  # every Linear on int8 kernels
    assert any(n.target is F.scaled_dot_product_attention for n in q.graph.nodes)  # attention itself stays float
    assert _acc(q, wl) >= _acc(wl.model, wl) - 0.02
    assert _acc(q, wl) >= _acc(wl.model, wl) - 0.02


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet", "mobilenet"])
def test_residual_and_depthwise_cnns_fuse_everywhere_and_add_in_int8(name):
    wl = zoo.ZOO[name]()
    q = quantize(wl.model, StaticInt8Config(), wl)
    assert isinstance(q, fx.GraphModule)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in q.modules())  # every conv-BN fused, in blocks too
    assert _ops(q).count(torch.quantize_per_tensor) == 1  # no float islands between the blocks
    if name == "resnet":
        assert torch.ops.quantized.add_relu in _ops(q)  # the residual add runs on int8
    else:
        dw = [m for m in q.modules() if "quantized" in type(m).__module__ and "Conv" in type(m).__name__
              and m.groups == m.in_channels > 1]
        assert dw, "depthwise convs are quantized with their groups"
    assert all(r.bits == 8 for r in layer_stats(q) if r.params > 100)
    assert _acc(q, wl) >= _acc(wl.model, wl) - 0.01
    r = _reloaded(q, wl, StaticInt8Config())
    assert torch.equal(q(wl.test.x), r(wl.test.x))


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [StaticInt8Config(), QATConfig(epochs=1)], ids=["static", "qat"])
def test_same_padding_conv_subclass_keeps_its_forward(cfg):
    """Issue 14 item 8: replacing a Conv2d subclass by its class's int8 module lost its padding; traced through,
    the padding stays and the convolution itself is int8."""
    wl = zoo.same_pad_cnn()
    q = quantize(wl.model, cfg, wl)
    x = wl.test.x
    assert q(x[:7]).shape == wl.model(x[:7]).shape
    assert F.pad in _ops(q)  # its own forward's padding is in the graph
    rows = {r.name: r for r in layer_stats(q)}
    assert rows["conv1"].bits == 8 and rows["conv2"].bits == 8  # the subclass's weights are int8 too
    assert rows["conv2"].params == wl.model.conv2.weight.numel() + wl.model.conv2.bias.numel()
    assert _acc(q, wl) >= _acc(wl.model, wl) - 0.015
    r = _reloaded(q, wl, cfg)
    assert torch.equal(q(x), r(x))


class _Untraceable(nn.Module):
    """A model torch.fx cannot trace (a Python int from a tensor value), with one standard and one subclass conv."""

    def __init__(self, same_pad: bool):
        super().__init__()
        self.conv = zoo.Conv2dSame(1, 32, 3) if same_pad else nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)  # enough weights that int8 makes the file smaller
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        reps = int(x.detach().abs().sum() > -1)  # always 1, but a traced proxy cannot become an int
        return self.fc(F.relu(self.conv2(F.relu(self.conv(x)))).mean((2, 3))) * reps


@pytest.mark.slow
def test_untraceable_model_falls_back_to_eager_and_refuses_a_subclass_in_one_line():
    from compression_core import Workload

    tr, cal, te = zoo.digits()
    wl = Workload(name="untraceable", model=zoo.train(_Untraceable(False), tr, 4), train=tr, calib=cal, test=te)
    msgs = []
    q = quantize(wl.model, StaticInt8Config(), wl, progress=lambda f, m: msgs.append(m))
    assert any("graph mode unavailable" in m for m in msgs)
    assert isinstance(q.conv, QuantWrapper) and "quantized" in type(q.conv.module).__module__
    assert q(te[0][:5]).shape == (5, 10)
    assert _acc(q, wl) >= _acc(wl.model, wl) - 0.02
    bad = Workload(name="untraceable-same", model=_Untraceable(True).eval(), train=tr, calib=cal, test=te)
    with pytest.raises(CompressionError) as e:
        quantize(bad.model, StaticInt8Config(), bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("targets:") and "'conv'" in msg and "own forward" in msg


def test_a_result_that_would_not_be_smaller_is_refused_in_one_line():
    """A GRU classifier: static int8 can only run its final Linear in int8; the file would grow. One line, naming
    what it could quantize and what to use instead."""
    wl = zoo.gru()
    with pytest.raises(CompressionError) as e:
        quantize(wl.model, StaticInt8Config(), wl)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("targets:") and "not shrink" in msg and "quantize_dynamic" in msg


def test_static_without_calibration_data_is_a_one_line_error():
    wl = sample_models.load("digits-cnn")
    with pytest.raises(CompressionError) as e:
        quantize(wl.model, StaticInt8Config())
    assert "\n" not in str(e.value) and "calib" in str(e.value) and str(e.value).startswith("data:")
    with pytest.raises(CompressionError, match="train"):
        quantize(wl.model, QATConfig(epochs=1))


def test_ignored_layers_stay_float_in_graph_mode():
    wl = sample_models.load("digits-cnn")
    q = quantize(wl.model, StaticInt8Config(ignore=("conv1",), include_classifier=False), wl)
    rows = {r.name.split(".")[0]: r for r in layer_stats(q)}  # a float conv-BN-ReLU is fused too: "conv1.0"
    assert rows["conv1"].bits == 32 and rows["fc2"].bits == 32 and rows["conv2"].bits == 8
    assert _acc(q, wl) >= _acc(wl.model, wl) - 0.01


def test_qat_trains_then_converts_and_replay_builds_the_same_structure():
    wl = sample_models.load("digits-mlp")
    q = quantize(wl.model, QATConfig(epochs=1, weight_bits=4), wl)
    assert "quantized" in type(q.fc1).__module__
    assert _acc(q, wl) >= _acc(wl.model, wl) - 0.03
    r = quantize(sample_models.load("digits-mlp").model, QATConfig(epochs=1, weight_bits=4), wl, replay=True)
    assert {k: getattr(v, "shape", None) for k, v in r.state_dict().items()} == \
        {k: getattr(v, "shape", None) for k, v in q.state_dict().items()}


@pytest.mark.slow
def test_the_input_model_is_not_modified():
    wl = zoo.resnet()
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    modes = [m.training for m in wl.model.modules()]
    quantize(wl.model, QATConfig(epochs=1), wl)
    quantize(wl.model, StaticInt8Config(), wl)
    assert all(torch.equal(before[k], v) for k, v in wl.model.state_dict().items())
    assert [m.training for m in wl.model.modules()] == modes
    assert all(type(m).__module__.startswith(("torch.nn", "zoo")) for m in wl.model.modules())
    with torch.no_grad():
        assert math.isfinite(float(wl.model(wl.test.x[:2]).sum()))
