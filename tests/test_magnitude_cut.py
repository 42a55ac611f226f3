"""``CutL1Unstructured`` (compression_core/prune/magnitude_cut.py) gives torch.nn.utils.prune's L1Unstructured mask bit
for bit: per tensor, repeated (a PruningContainer over an earlier mask), globally over several layers, with ties at
the cut, zeros, NaN, and when the kept sorted magnitudes belong to other values (a fingerprint collision)."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.nn.utils import prune as torch_prune

from compression_core.prune import magnitude_cut as M
from compression_core.prune.magnitude_cut import CutL1Unstructured


def _tensor(seed: int, n: int, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g)
    if kind == "ties":
        w = torch.round(w * 3) / 3  # many equal magnitudes, also at the cut
    elif kind == "zeros":
        w[: n // 2] = 0
    elif kind == "nan":
        w[0] = float("nan")
    return w


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 700), amount=st.floats(0, 0.99),
       kind=st.sampled_from(["plain", "ties", "zeros", "nan"]), reps=st.integers(1, 3))
def test_the_mask_is_l1_unstructureds_on_any_values(seed, n, amount, kind, reps):
    w = _tensor(seed, n, kind)
    d = torch.ones_like(w)
    want = torch_prune.L1Unstructured(amount).compute_mask(w, d)
    for _ in range(reps):  # first sight (selection), second (sorted kept), third (a lookup)
        got = CutL1Unstructured(amount).compute_mask(w, d)
        assert torch.equal(got, want)
        assert got.dtype == want.dtype and got.is_contiguous()


def test_a_fingerprint_collision_never_changes_the_mask(monkeypatch):
    monkeypatch.setattr(M, "_key", lambda a: ("every tensor looks the same",))
    monkeypatch.setattr(M, "_SORTED", M._Sorted())
    for seed in range(6):
        w = torch.randn(500, generator=torch.Generator().manual_seed(seed))
        for amount in (0.3, 0.6):
            d = torch.ones_like(w)
            assert torch.equal(CutL1Unstructured(amount).compute_mask(w, d),
                               torch_prune.L1Unstructured(amount).compute_mask(w, d))
    assert M._SORTED.items  # the sorted magnitudes of another tensor were kept and offered


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 30), nn.ReLU(), nn.Conv2d(3, 4, 3))
    with torch.no_grad():
        net[2].weight[:5] = torch.round(net[2].weight[:5] * 4) / 4  # ties
    return net


def _masks(net: nn.Module) -> list[torch.Tensor]:
    return [b for n, b in net.named_buffers() if n.endswith("weight_mask")]


@pytest.mark.parametrize("seed", range(4))
def test_repeated_and_global_pruning_equal_torchs(seed):
    mods = lambda net: [net[0], net[2], net[4]]  # noqa: E731
    a, b = _net(seed), _net(seed)
    for amount in (0.3, 0.5):  # the second round prunes the still-unpruned (a PruningContainer)
        for m in mods(a):
            torch_prune.l1_unstructured(m, "weight", amount=amount)
        for m in mods(b):
            CutL1Unstructured.apply(m, "weight", amount=amount)
    assert all(torch.equal(x, y) for x, y in zip(_masks(a), _masks(b)))
    for m in mods(b):
        hook = next(h for h in m._forward_pre_hooks.values())
        assert isinstance(hook, torch_prune.PruningContainer)
    a, b = _net(seed), _net(seed)
    for amount in (0.4, 0.25):
        torch_prune.global_unstructured([(m, "weight") for m in mods(a)], torch_prune.L1Unstructured, amount=amount)
        torch_prune.global_unstructured([(m, "weight") for m in mods(b)], CutL1Unstructured, amount=amount)
    assert all(torch.equal(x, y) for x, y in zip(_masks(a), _masks(b)))
    assert sum(int((m == 0).sum()) for m in _masks(b)) > 0


def test_prune_unstructured_on_a_copy_equals_torchs_own_pruning():
    from compression_core import prune
    from compression_core.prune.unstructured import UnstructuredPruneConfig

    net = _net(7)
    ref = copy.deepcopy(net)
    for scope in ("layer", "global"):
        out = prune(net, UnstructuredPruneConfig(amount=0.45, scope=scope, include_classifier=True))
        want = copy.deepcopy(ref)
        params = [(want[i], "weight") for i in (0, 2, 4)]
        if scope == "layer":
            for m, _ in params:
                torch_prune.l1_unstructured(m, "weight", amount=0.45)
        else:
            torch_prune.global_unstructured(params, torch_prune.L1Unstructured, amount=0.45)
        assert all(torch.equal(x, y) for x, y in zip(_masks(out), _masks(want)))
    assert all(torch.equal(x, y) for x, y in zip(net.state_dict().values(), ref.state_dict().values()))


def test_kept_sorted_magnitudes_stay_within_their_bound(monkeypatch):
    monkeypatch.setattr(M, "MAX_BYTES", 3 * 4 * 1000)  # room for three 1,000-value tensors
    monkeypatch.setattr(M, "_SORTED", M._Sorted())
    ws = [torch.randn(1000, generator=torch.Generator().manual_seed(s)) for s in range(6)]
    for w in ws:
        for amount in (0.2, 0.4, 0.6):
            assert torch.equal(CutL1Unstructured(amount).compute_mask(w, torch.ones_like(w)),
                               torch_prune.L1Unstructured(amount).compute_mask(w, torch.ones_like(w)))
    assert len(M._SORTED.items) == 3 and M._SORTED.bytes == 3 * 4 * 1000  # recently used ones are not evicted


def test_a_weight_the_full_store_cannot_keep_is_selected_not_sorted(monkeypatch):
    """A weight pruned again while the store is full of recently used entries (a BERT-base's Linear weights need
    340 MB against 256 MiB) gets the selection, not a sort that could not be kept: each such pruning sorted its
    2.4 M magnitudes again (0.12 s a layer, ~1.5 s of every BERT-base move)."""
    monkeypatch.setattr(M, "MAX_BYTES", 3 * 4 * 1000)
    monkeypatch.setattr(M, "_SORTED", M._Sorted())
    sorts = []
    real_sort = torch.sort
    monkeypatch.setattr(torch, "sort", lambda *a, **k: sorts.append(1) or real_sort(*a, **k))
    ws = [torch.randn(1000, generator=torch.Generator().manual_seed(s)) for s in range(5)]
    for amount in (0.2, 0.4, 0.6, 0.8):
        for w in ws:
            assert torch.equal(CutL1Unstructured(amount).compute_mask(w, torch.ones_like(w)),
                               torch_prune.L1Unstructured(amount).compute_mask(w, torch.ones_like(w)))
    assert len(M._SORTED.items) == 3
    assert len(sorts) == 3  # the three kept ones, each once; the other two never (they were sorted 3 times each)


def test_the_cost_estimate_and_the_masks_share_one_sorted_copy(monkeypatch):
    """The cost estimate sorts each base weight's magnitudes once (its lookups); the pruning masks then reuse that
    very tensor from their store (one copy per process), and a stored tensor is never taken unchecked."""
    import sample_models
    from compression_core import estimate_cost

    monkeypatch.setattr(M, "_SORTED", M._Sorted())
    wl = sample_models.load("digits-mlp")
    model = copy.deepcopy(wl.model)  # a model no estimate has seen in this process (its facts are cached per model)
    # pruning then fake quant: the quantized zeros are counted from the pruning's cut (the sorted magnitudes)
    estimate_cost(model, [{"kind": "prune_unstructured", "amount": 0.5}, {"kind": "fake_quant", "bits": 4}], wl)
    w = model.get_submodule("fc1").weight.detach()
    a = w.abs().reshape(-1).contiguous()
    held = M._SORTED.get(M._key(a))
    assert held is not None and torch.equal(held, torch.sort(a).values)
    fresh = torch.sort(a).values
    assert M.shared_sorted(a, fresh) is held  # an equal sort already kept: the kept one, no second copy
    wrong = fresh.flip(0)
    assert M.shared_sorted(a, wrong) is wrong  # a different tensor under the same fingerprint is never swapped in
    mask = CutL1Unstructured(amount=0.5).compute_mask(w, torch.ones_like(w))
    assert torch.equal(mask, torch_prune.L1Unstructured(amount=0.5).compute_mask(w, torch.ones_like(w)))
