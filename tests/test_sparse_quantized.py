"""Deep Compression's last stage: a pruned, int8-quantized model stores its int8 codes sparsely, and loads back."""

import pytest
import torch

import sample_models
from compression_core import (
    DynamicInt8Config, StaticInt8Config, UnstructuredPruneConfig, encode_sparse, load_sparse, prune, quantize,
    size_bytes, sparse_size_bytes,
)
from compression_core.errors import CompressionError
from compression_core.sparse import decode_sparse


@pytest.mark.parametrize("name,cfg", [("mnist-lenet300", DynamicInt8Config()), ("digits-cnn", StaticInt8Config())])
def test_pruned_int8_model_round_trips_and_shrinks_with_sparsity(name, cfg):
    sm = sample_models.load(name)
    pruned = prune(sm.model, UnstructuredPruneConfig(amount=0.9, scope="global"), sm.data)
    q = quantize(pruned, cfg, sm.data)
    data = encode_sparse(q)
    back = load_sparse(data, quantize(sm.model, cfg, sm.data))  # a skeleton of the same structure
    x = sm.data.test.x
    with torch.no_grad():
        assert torch.equal(back(x), q(x))
    assert len(data) == sparse_size_bytes(q)
    if name == "mnist-lenet300":  # 90% of the big layers are zero: the int8 file shrinks about 4x more
        assert len(data) < 0.35 * size_bytes(q)


def test_dense_int8_model_is_not_inflated():
    sm = sample_models.load("digits-cnn")
    q = quantize(sm.model, StaticInt8Config(), sm.data)
    assert sparse_size_bytes(q) < 1.05 * size_bytes(q)


def test_corrupt_sparse_file_is_one_line_error():
    sm = sample_models.load("digits-mlp")
    q = quantize(sm.model, DynamicInt8Config(), sm.data)
    data = bytearray(encode_sparse(q))
    with pytest.raises(CompressionError) as e:
        decode_sparse(bytes(data[: len(data) // 2]))
    assert "\n" not in str(e.value)
