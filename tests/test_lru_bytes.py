"""The dashboard's per-process stores of compressed models are bounded by bytes, not only by count: a 110 M
parameter model's copies (~440 MB each) once filled 22 GB and got the server OOM-killed."""

from __future__ import annotations

import copy

import torch
from torch import nn

from dashboard_modules import dashboard_module


class _Result:
    def __init__(self, model):
        self.model = model


def _model(width: int) -> nn.Module:
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 4))


def test_model_bytes_counts_each_storage_once():
    lru = dashboard_module("state.lru")
    m = _model(64)
    want = sum(p.numel() * 4 for p in m.parameters())
    assert lru.model_bytes((_Result(m), 0.1)) == want
    tied = _model(64)
    tied[2].weight = nn.Parameter(torch.zeros(4, 64))
    tied.extra = nn.Linear(64, 4)
    tied.extra.weight = tied[2].weight  # shared: counted once
    assert lru.model_bytes((_Result(tied), 0.1)) == want + 4 * 4  # plus the extra layer's own bias
    assert lru.model_bytes(("not a result", 0.1)) == 0


def test_lru_evicts_oldest_past_its_byte_budget_and_keeps_the_newest():
    lru = dashboard_module("state.lru")
    one = lru.model_bytes((_Result(_model(64)), 0))
    store = lru.LRU(size=24, max_bytes=int(2.5 * one), weigh=lru.model_bytes)
    for i in range(5):
        store.put(f"k{i}", (_Result(_model(64)), 0.0))
    assert list(store.items) == ["k3", "k4"] and store.bytes == 2 * one
    store.get("k3")  # used: k4 is now the oldest
    store.put("k5", (_Result(_model(64)), 0.0))
    assert list(store.items) == ["k3", "k5"]
    big = lru.LRU(size=24, max_bytes=one // 2, weigh=lru.model_bytes)
    big.put("a", (_Result(_model(64)), 0.0))
    big.put("b", (_Result(_model(64)), 0.0))
    assert list(big.items) == ["b"]  # over budget alone: the newest is still kept
    plain = lru.LRU(size=2)
    for i in range(4):
        plain.put(f"k{i}", (copy.deepcopy(_Result(_model(8))), 0.0))
    assert list(plain.items) == ["k2", "k3"] and plain.bytes == 0
