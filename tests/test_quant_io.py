"""Saving quantized models: bundles (the one save format) round-trip every quantization method exactly, from a
path, bytes or a file object; the safe state_dict loads without pickle; bad input is one line."""

import io

import pytest
import torch

import sample_models
from compression_core import CompressionError, Recipe, register_workload
from compression_core.bundle import bundle_bytes, load_bundle, save_bundle
from compression_core.measure import predict
from compression_core.quantize import (DynamicInt8Config, FakeQuantConfig, HalfPrecisionConfig, Int4Config, QATConfig,
                                       StaticInt8Config, quantize, safe_state_dict)

CASES = [
    ("digits-lstm", DynamicInt8Config()),
    ("digits-cnn", StaticInt8Config()),
    ("digits-vit", StaticInt8Config(observer="minmax")),
    ("digits-mlp", QATConfig(epochs=1)),
    ("digits-cnn", HalfPrecisionConfig(dtype="bf16")),
    ("digits-mlp", Int4Config(symmetric=False, overrides={"fc3": 8})),
    ("digits-cnn", FakeQuantConfig(bits=5, activation_bits=6, include_classifier=True)),
]


@pytest.mark.first_case_fast
@pytest.mark.parametrize("name,cfg", CASES, ids=[f"{n}-{c.kind}" for n, c in CASES])
def test_save_load_round_trip_gives_identical_outputs_and_never_changes_the_input(tmp_path, name, cfg):
    wl = sample_models.load(name)
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    q = quantize(wl.model, cfg, wl)
    after = wl.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input model is untouched
    path = tmp_path / "q.bundle.pt"
    save_bundle(path, Recipe(model=name, steps=[cfg]), q)
    torch.load(path, weights_only=True)  # the file holds tensors, tuples and plain data only
    recipe, r = load_bundle(path)
    assert recipe.steps == [cfg]
    x = wl.test.x
    assert torch.equal(predict(q, x), predict(r, x))


def test_a_bundle_loads_from_bytes_and_from_a_file_object(tmp_path):
    wl = sample_models.load("digits-lstm")
    cfg = DynamicInt8Config()
    q = quantize(wl.model, cfg, wl)
    data = bundle_bytes(Recipe(model="digits-lstm", steps=[cfg]), q)
    x = wl.test.x[:64]
    for source in (data, bytearray(data), io.BytesIO(data)):
        _, r = load_bundle(source)
        assert torch.equal(predict(q, x), predict(r, x))
    path = tmp_path / "q.bundle.pt"
    path.write_bytes(data)
    with open(path, "rb") as f:
        _, r = load_bundle(f)
    assert torch.equal(predict(q, x), predict(r, x))


def test_a_bundle_whose_reference_is_unknown_here_loads_with_the_workload_given(monkeypatch):
    """A model saved under a name registered in another process: load_bundle(source, workload) rebuilds it on the
    workload given (as load_quantized(path, base_model) did); without one, the unknown name is one line."""
    import compression_core.workload as W

    wl = sample_models.load("digits-mlp")
    register_workload("tmp-elsewhere", lambda: wl)
    cfg = Int4Config()
    q = quantize(wl.model, cfg, wl)
    data = bundle_bytes(Recipe(model="tmp-elsewhere", steps=[cfg]), q)
    monkeypatch.delitem(W._REGISTRY, "tmp-elsewhere")  # the loading process never registered it
    with pytest.raises(CompressionError, match="^bundle \\(bytes\\): its recipe is invalid: model: unknown model"):
        load_bundle(data)
    recipe, r = load_bundle(data, workload=wl)
    assert recipe.model == "tmp-elsewhere"
    x = wl.test.x[:64]
    assert torch.equal(predict(q, x), predict(r, x))


def test_dynamic_lstm_plain_state_dict_needs_pickle_the_safe_one_does_not():
    wl = sample_models.load("digits-lstm")
    q = quantize(wl.model, DynamicInt8Config(), wl)
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
    for source in (path, path.read_bytes(), io.BytesIO(path.read_bytes())):
        with pytest.raises(CompressionError, match="^bundle .*not a Compression Lab bundle") as e:
            load_bundle(source)
        assert "\n" not in str(e.value)
    with pytest.raises(CompressionError, match="binary mode"):
        load_bundle(io.StringIO("text"))


def test_unknown_kind_is_a_one_line_error():
    wl = sample_models.load("digits-mlp")
    with pytest.raises(CompressionError, match="^kind: unknown quantization method 'quantize_int3'"):
        quantize(wl.model, {"kind": "quantize_int3"})
