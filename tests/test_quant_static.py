import pytest
import torch
import torch.ao.quantization as tq
from torch import nn

import sample_models
from compression_core import CompressionError, accuracy, size_bytes
from compression_core.quantize import QATConfig, StaticInt8Config, quantize
from compression_core.quantize import _torch_ao


def _acc(model, sm):
    return accuracy(model, sm.data.test.x, sm.data.test.y)


def test_static_int8_digits_cnn_fuses_conv_bn_relu_and_is_small_and_accurate():
    sm = sample_models.load("digits-cnn")
    q = quantize(sm.model, StaticInt8Config(), sm)
    assert type(q.conv1).__module__.startswith("torch.ao.nn.intrinsic.quantized")  # ConvReLU2d, BN folded
    assert isinstance(q.bn1, nn.Identity) and isinstance(q.relu1, nn.Identity)
    assert list(q._modules)[0] == "quant0" and list(q._modules)[-1] == "dequant0"
    assert size_bytes(q) <= 0.35 * size_bytes(sm.model)
    assert _acc(q, sm) >= _acc(sm.model, sm) - 0.01


def test_static_minmax_per_tensor_equals_torch_eager_ptq():
    """Oracle: torch's own QuantWrapper + fuse + prepare + calibrate + convert with the same qconfig."""
    sm = sample_models.load("digits-mlp")
    cfg = StaticInt8Config(observer="minmax", weights="per_tensor")
    ours = quantize(sm.model, cfg, sm)
    ref = tq.QuantWrapper(sample_models.load("digits-mlp").model.eval())
    ref.qconfig = _torch_ao.qconfig("minmax", "per_tensor", 8)
    _torch_ao.fuse(ref.module, [["fc1", "relu1"], ["fc2", "relu2"]], qat=False)
    _torch_ao.prepare(ref, qat=False)
    with torch.no_grad():
        ref(sm.data.calib.x)
    _torch_ao.convert(ref)
    x = sm.data.test.x
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))
    assert ours.fc1.weight().qscheme() == torch.per_tensor_affine


def test_per_channel_weights_and_restricted_weight_bits():
    sm = sample_models.load("digits-mlp")
    q = quantize(sm.model, StaticInt8Config(weight_bits=4), sm)
    w = q.fc2.weight()
    assert w.qscheme() == torch.per_channel_affine
    ints = w.int_repr()
    assert int(ints.min()) >= -8 and int(ints.max()) <= 7


def test_vit_linear_layers_each_get_their_own_stubs_and_layernorm_stays_float():
    sm = sample_models.load("digits-vit")
    q = quantize(sm.model, StaticInt8Config(observer="minmax"), sm)
    qkv = q.blocks[0].attn.qkv
    assert isinstance(qkv, tq.QuantWrapper) and "quantized" in type(qkv.module).__module__
    assert type(q.blocks[0].ln1) is nn.LayerNorm
    assert _acc(q, sm) >= _acc(sm.model, sm) - 0.02


def test_static_without_calibration_data_is_a_one_line_error():
    sm = sample_models.load("digits-cnn")
    with pytest.raises(CompressionError) as e:
        quantize(sm.model, StaticInt8Config())
    assert "\n" not in str(e.value) and "calib" in str(e.value) and str(e.value).startswith("data:")
    with pytest.raises(CompressionError, match="train"):
        quantize(sm.model, QATConfig(epochs=1))


def test_qat_trains_then_converts_and_replay_builds_the_same_structure():
    sm = sample_models.load("digits-mlp")
    q = quantize(sm.model, QATConfig(epochs=1, weight_bits=4), sm)
    assert "quantized" in type(q.fc1).__module__
    assert _acc(q, sm) >= _acc(sm.model, sm) - 0.03
    r = quantize(sample_models.load("digits-mlp").model, QATConfig(epochs=1, weight_bits=4), None, replay=True)
    assert {k: getattr(v, "shape", None) for k, v in r.state_dict().items()} == \
        {k: getattr(v, "shape", None) for k, v in q.state_dict().items()}
