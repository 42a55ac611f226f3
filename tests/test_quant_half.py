import pytest
import torch

import sample_models
from compression_core import accuracy, size_bytes
from compression_core.measure import predict
from compression_core.quantize import HalfPrecisionConfig, quantize


@pytest.mark.parametrize("dtype,torch_dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16)])
@pytest.mark.parametrize("name", ["digits-cnn", "digits-lstm"])
def test_half_precision_uses_real_dtypes_half_the_file_same_accuracy(name, dtype, torch_dtype):
    wl = sample_models.load(name)
    q = quantize(wl.model, HalfPrecisionConfig(dtype=dtype))
    assert {p.dtype for p in q.parameters()} == {torch_dtype}
    assert size_bytes(q) <= 0.55 * size_bytes(wl.model)
    t = wl.test
    assert predict(q, t.x[:4]).dtype == torch.float32
    assert accuracy(q, t.x, t.y) >= accuracy(wl.model, t.x, t.y) - 0.01
