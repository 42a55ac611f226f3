"""Sparse storage: the file shrinks with sparsity, loads with weights_only, and gives identical outputs."""

import io

import pytest
import torch

import sample_models
from compression_core import (
    CompressionError,
    decode_sparse,
    encode_sparse,
    load_sparse,
    measure,
    prune,
    shippable_state_dict,
    size_bytes,
    sparse_size_bytes,
)
from compression_core.prune import StructuredPruneConfig, UnstructuredPruneConfig


@pytest.fixture(scope="module")
def lenet():
    return sample_models.load("mnist-lenet300")


@pytest.mark.parametrize("amount", [0.0, 0.5, 0.9, 0.98])
def test_round_trip_is_exact(lenet, amount):
    pruned = prune(lenet.model, UnstructuredPruneConfig(amount=amount, scope="global"), lenet)
    data = encode_sparse(pruned)
    raw = torch.load(io.BytesIO(data), weights_only=True)  # plain tensors, strings and ints only
    assert raw["format"] == "compression-lab-sparse"
    state = decode_sparse(data)
    ref = shippable_state_dict(pruned)
    assert list(state) == list(ref) and all(torch.equal(state[k], ref[k]) for k in ref)
    loaded = load_sparse(data, lenet.model)
    x = lenet.test.x
    with torch.no_grad():
        assert torch.equal(loaded(x), pruned(x))


def test_file_shrinks_with_sparsity_and_meets_the_90_percent_target(lenet):
    sizes = [sparse_size_bytes(prune(lenet.model, UnstructuredPruneConfig(amount=a, scope="global"), lenet))
             for a in (0.5, 0.8, 0.9, 0.95, 0.98)]
    assert sizes == sorted(sizes, reverse=True)
    dense = size_bytes(lenet.model)
    assert sizes[2] <= 0.2 * dense
    assert sparse_size_bytes(lenet.model) <= dense * 1.01  # dense tensors stay dense: no blow-up


def test_every_encoding_round_trips():
    from compression_core.sparse import _decode_tensor, _encode_tensor

    torch.manual_seed(0)
    for density, enc in [(1.0, "dense"), (0.3, "bitmask"), (0.01, "csr")]:
        for shape in [(40, 50), (8, 3, 3, 3), (300,)]:
            t = torch.randn(shape) * (torch.rand(shape) < density)
            e = _encode_tensor(t)
            assert torch.equal(_decode_tensor(e), t)
            if shape == (40, 50):  # the smallest form wins
                assert e["enc"] == enc, (shape, density)


def test_measure_reports_the_sparse_size_only_when_weights_are_zero():
    wl = sample_models.load("digits-cnn")
    assert measure(wl.model, wl, with_latency=False).sparse_size_bytes is None
    masked = prune(wl.model, StructuredPruneConfig(unit="channels", amount=0.5), wl)
    stats = measure(masked, wl, with_latency=False)
    assert stats.sparse_size_bytes == sparse_size_bytes(masked) < stats.size_bytes


def test_not_a_sparse_file_is_a_one_line_error():
    with pytest.raises(CompressionError, match="sparse file: cannot read it"):
        decode_sparse(b"garbage")
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(1)}, buf)
    with pytest.raises(CompressionError, match="not a compression-lab-sparse file"):
        decode_sparse(buf.getvalue())
