import pytest
import torch
from torch import nn

import sample_models
from compression_core import CompressionError, accuracy, layer_stats, size_bytes
from compression_core.quantize import DynamicInt8Config, quantize
from compression_core.quantize.ao_engine import quiet, use_engine


def torch_quantize_dynamic(model: nn.Module, types: set[type[nn.Module]]) -> nn.Module:
    """The oracle: torch's own ``quantize_dynamic`` by module types, on a copy, with the library's engine."""
    use_engine()
    with quiet():
        return torch.ao.quantization.quantize_dynamic(model, types, dtype=torch.qint8, inplace=False)


@pytest.mark.first_case_fast
@pytest.mark.parametrize("name,types", [("digits-mlp", {nn.Linear}), ("digits-lstm", {nn.LSTM, nn.Linear})])
def test_dynamic_int8_matches_torch_quantize_dynamic_exactly(name, types):
    wl = sample_models.load(name)
    ours = quantize(wl.model, DynamicInt8Config(), wl)
    theirs = torch_quantize_dynamic(wl.model, types)
    x = wl.test.x[:64]
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in theirs.modules()]


def test_dynamic_int8_quantizes_the_lstm_and_measure_sees_its_int8_weights():
    wl = sample_models.load("digits-lstm")
    q = quantize(wl.model, DynamicInt8Config(), wl)
    rows = {r.name: r for r in layer_stats(q)}
    assert rows["lstm"].bits == 8 and rows["lstm"].dtype == "qint8"
    assert rows["lstm"].params == sum(p.numel() for p in wl.model.lstm.parameters())
    assert size_bytes(q) < 0.35 * size_bytes(wl.model)


def test_dynamic_int8_lenet300_is_small_and_accurate():
    wl = sample_models.load("mnist-lenet300")
    q = quantize(wl.model, DynamicInt8Config(), wl)
    assert size_bytes(q) <= 0.30 * size_bytes(wl.model)
    t = wl.test
    assert accuracy(q, t.x, t.y) >= accuracy(wl.model, t.x, t.y) - 0.005


def test_targets_and_ignore_leave_other_layers_float():
    wl = sample_models.load("digits-mlp")
    q = quantize(wl.model, DynamicInt8Config(ignore=("fc1",)), wl)
    assert type(q.fc1) is nn.Linear and type(q.fc2) is not nn.Linear
    q = quantize(wl.model, DynamicInt8Config(include_classifier=False), wl)
    assert type(q.fc3) is nn.Linear


def test_a_conv_layer_is_not_supported_one_line_error():
    wl = sample_models.load("digits-cnn")
    with pytest.raises(CompressionError) as e:
        quantize(wl.model, DynamicInt8Config(targets=("conv1",)), wl)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("targets:") and "Conv2d" in msg and "Linear/Conv1D/LSTM/GRU" in msg
