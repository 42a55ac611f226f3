
import pytest
import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils.flop_counter import FlopCounterMode

import sample_models
from compression_core import flops, layer_stats, measure, size_bytes


def test_size_is_the_bytes_of_the_saved_file(tmp_path):
    wl = sample_models.load("digits-mlp")
    path = tmp_path / "archive.pt"  # torch.save names the zip's root folder after the file; BytesIO uses "archive"
    torch.save(wl.model.state_dict(), path)
    assert size_bytes(wl.model) == path.stat().st_size


def test_dense_flops_match_torch_flop_counter_and_the_formula():
    wl = sample_models.load("digits-cnn")
    x = wl.test.x[:1]
    with FlopCounterMode(display=False) as c:
        wl.model(x)
    total, nonzero = flops(wl.model, x)
    assert total == c.get_total_flops() == nonzero
    # conv1: 16 out channels x 64 positions x 9 MACs x 2; fc2: 64 x 10 x 2
    assert c.get_flop_counts()["DigitsCNN.conv1"] and total > 2 * 16 * 64 * 9 + 2 * 64 * 10


def test_flops_of_dynamic_int8_model_are_counted_not_zero():
    wl = sample_models.load("mnist-lenet300")
    q = torch.ao.quantization.quantize_dynamic(wl.model, {nn.Linear}, dtype=torch.qint8)
    total, _ = flops(q, wl.test.x[:1])
    assert total == 2 * (784 * 300 + 300 * 100 + 100 * 10)


def test_masked_weights_count_as_zero_params_and_skippable_flops():
    wl = sample_models.load("mnist-lenet300")
    m = wl.model
    prune.l1_unstructured(m.fc1, "weight", amount=0.5)
    rows = {r.name: r for r in layer_stats(m)}
    assert rows["fc1"].params == 784 * 300 + 300
    assert rows["fc1"].nonzero == 784 * 300 - 117600 + 300
    assert rows["fc1"].sparsity == pytest.approx(117600 / (784 * 300 + 300), abs=1e-6)
    total, nonzero = flops(m, wl.test.x[:1])
    assert total == 2 * (784 * 300 + 300 * 100 + 100 * 10)
    assert nonzero == total - 117600 * 2
    # the mask is not shipped: the file is the dense fp32 size, not larger
    plain = sample_models.load("mnist-lenet300").model
    assert abs(size_bytes(m) - size_bytes(plain)) < 2048


def test_measure_reports_everything_and_does_not_change_the_model():
    wl = sample_models.load("digits-vit")
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    s = measure(wl.model, wl, name="digits-vit", batch_size=4, min_run_time=0.05)
    assert s.params == sum(p.numel() for p in wl.model.parameters())
    assert s.nonzero_params <= s.params
    assert s.latency_ms > 0 and s.batch_size == 4 and s.threads == 1 and s.latency_runs >= 10
    assert 0.94 <= s.accuracy <= 1
    assert s.flops > 0
    after = wl.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_quantized_layers_report_their_bits():
    wl = sample_models.load("digits-mlp")
    q = torch.ao.quantization.quantize_dynamic(wl.model, {nn.Linear}, dtype=torch.qint8)
    rows = layer_stats(q)
    assert [r.bits for r in rows] == [8, 8, 8]
    assert size_bytes(q) < 0.4 * size_bytes(wl.model)


def test_lstm_flops_are_counted_with_the_gate_formula():
    wl = sample_models.load("digits-lstm")
    total, _ = flops(wl.model, wl.test.x[:1])
    # 8 steps x 4 gates x hidden 64 x (8 inputs + 64 hidden) MACs, plus the 64x10 classifier, 2 FLOPs per MAC
    assert total == 2 * 8 * 4 * 64 * (8 + 64) + 2 * 64 * 10
