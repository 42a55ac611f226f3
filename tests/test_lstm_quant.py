"""digits-lstm after dynamic int8 survives a bundle round trip (recipe replay + weights) with identical outputs.
(every quantization method's bundle round trip, the torch oracle and the int8 layer rows are in test_quant_io /
test_quant_dynamic.)"""

import torch

import sample_models
from compression_core import size_bytes
from compression_core.bundle import load_bundle, save_bundle
from compression_core.recipe import apply_recipe, load_recipe


def test_dynamic_int8_lstm_bundle_round_trip_is_identical_and_smaller(tmp_path):
    recipe = load_recipe({"model": "digits-lstm", "steps": [{"kind": "quantize_dynamic"}]})
    result = apply_recipe(recipe, with_latency=False)
    assert type(result.model.lstm).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(result.model.fc).__module__.startswith("torch.ao.nn.quantized.dynamic")
    path = tmp_path / "lstm.bundle.pt"
    save_bundle(path, recipe, result.model)
    _, loaded = load_bundle(path)
    x = sample_models.data("digits-lstm").test.x
    with torch.no_grad():
        assert torch.equal(loaded(x), result.model(x))
    assert size_bytes(loaded) < 0.35 * size_bytes(sample_models.load("digits-lstm").model)
