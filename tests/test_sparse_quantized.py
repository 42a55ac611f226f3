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
    wl = sample_models.load(name)
    pruned = prune(wl.model, UnstructuredPruneConfig(amount=0.9, scope="global"), wl)
    q = quantize(pruned, cfg, wl)
    data = encode_sparse(q)
    back = load_sparse(data, quantize(wl.model, cfg, wl))  # a skeleton of the same structure
    x = wl.test.x
    with torch.no_grad():
        assert torch.equal(back(x), q(x))
    assert len(data) == sparse_size_bytes(q)
    if name == "mnist-lenet300":  # 90% of the big layers are zero: the int8 file shrinks about 4x more
        assert len(data) < 0.35 * size_bytes(q)


def test_dense_int8_model_is_not_inflated():
    wl = sample_models.load("digits-cnn")
    q = quantize(wl.model, StaticInt8Config(), wl)
    assert sparse_size_bytes(q) < 1.05 * size_bytes(q)


def test_corrupt_sparse_file_is_one_line_error():
    wl = sample_models.load("digits-mlp")
    q = quantize(wl.model, DynamicInt8Config(), wl)
    data = bytearray(encode_sparse(q))
    with pytest.raises(CompressionError) as e:
        decode_sparse(bytes(data[: len(data) // 2]))
    assert "\n" not in str(e.value)
