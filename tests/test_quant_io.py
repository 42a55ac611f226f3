import io

import pytest
import torch

import sample_models
from compression_core import CompressionError
from compression_core.measure import predict
from compression_core.quantize import (DynamicInt8Config, FakeQuantConfig, HalfPrecisionConfig, Int4Config, QATConfig,
                                       StaticInt8Config, load_quantized, quantize, safe_state_dict, save_quantized)

CASES = [
    ("digits-lstm", DynamicInt8Config()),
    ("digits-cnn", StaticInt8Config()),
    ("digits-vit", StaticInt8Config(observer="minmax")),
    ("digits-mlp", QATConfig(epochs=1)),
    ("digits-cnn", HalfPrecisionConfig(dtype="bf16")),
    ("digits-mlp", Int4Config(symmetric=False, overrides={"fc3": 8})),
    ("digits-cnn", FakeQuantConfig(bits=5, activation_bits=6, include_classifier=True)),
]


@pytest.mark.parametrize("name,cfg", CASES, ids=[f"{n}-{c.kind}" for n, c in CASES])
def test_save_load_round_trip_gives_identical_outputs_and_never_changes_the_input(tmp_path, name, cfg):
    sm = sample_models.load(name)
    before = {k: v.clone() for k, v in sm.model.state_dict().items()}
    q = quantize(sm.model, cfg, sm)
    after = sm.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input model is untouched
    path = tmp_path / "q.pt"
    save_quantized(q, cfg, path, name)
    torch.load(path, weights_only=True)  # the file holds tensors, tuples and plain data only
    r = load_quantized(path)
    x = sm.data.test.x
    assert torch.equal(predict(q, x), predict(r, x))


def test_dynamic_lstm_plain_state_dict_needs_pickle_the_safe_one_does_not():
    sm = sample_models.load("digits-lstm")
    q = quantize(sm.model, DynamicInt8Config(), sm)
    buf = io.BytesIO()
    torch.save(q.state_dict(), buf)
    buf.seek(0)
    with pytest.raises(Exception):  # torch.ScriptObject packed params are refused by the weights-only unpickler
        torch.load(buf, weights_only=True)
    buf = io.BytesIO()
    torch.save(safe_state_dict(q), buf)
    buf.seek(0)
    assert "lstm._weight_bias.weight_ih_l0" in torch.load(buf, weights_only=True)


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save({"a": torch.zeros(1)}, path)
    with pytest.raises(CompressionError, match="^path:"):
        load_quantized(path)


def test_unknown_kind_is_a_one_line_error():
    sm = sample_models.load("digits-mlp")
    with pytest.raises(CompressionError, match="^kind: unknown quantization method 'quantize_int3'"):
        quantize(sm.model, {"kind": "quantize_int3"})
