"""The compressed-layer cache (``compression_core.layer_cache``): a recipe built from cached layers equals the same
recipe applied without the cache, tensor for tensor, module type for module type, output for output, and step
report for step report, on the test zoo (CNNs, a GRU, Conv1D with tied weights, attention); a move that changes
one thing compresses only what it changed; the baseline is never changed; two variants never share a module
object; the cache stays under its byte bound; a whole-model step (global threshold, random importance, activation
calibration, an LSTM rounded in place, a pruned layer folded without being selected) runs on the whole model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zoo
from compression_core import apply_recipe
from compression_core import inputs as I
from compression_core.layer_cache import LayerCache
from compression_core.workload import resolve_workload

FAST = ["resnet", "gpt2", "gru", "row_transformer"]


def _workload(name: str):
    return zoo.ZOO[name]() if name in zoo.ZOO else resolve_workload(name)


def _apply(wl, steps, cache=None):
    return apply_recipe({"version": 1, "model": "digits-mlp", "steps": steps}, workload=wl, with_latency=False,
                        measure_before=False, measure_after=False, layers=cache)


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter, buffer and plain tensor attribute (a pruned or fake-quantized layer's derived weight)."""
    out = {f"{n}.{k}": v for n, m in model.named_modules() for k, v in list(m._parameters.items())
           + list(m._buffers.items()) + [(a, b) for a, b in vars(m).items() if isinstance(b, torch.Tensor)]
           if v is not None}
    return out


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in _tensors(model).items()}


def assert_same(a: nn.Module, b: nn.Module, x) -> None:
    ma, mb = dict(a.named_modules()), dict(b.named_modules())
    assert list(ma) == list(mb)
    for n in ma:
        assert type(ma[n]) is type(mb[n]), n
        assert ma[n].training == mb[n].training, n
        assert [type(h).__name__ for h in ma[n]._forward_pre_hooks.values()] == \
               [type(h).__name__ for h in mb[n]._forward_pre_hooks.values()], n
        assert getattr(ma[n], "fake_quant_bits", None) == getattr(mb[n], "fake_quant_bits", None), n
    ta, tb = _tensors(a), _tensors(b)
    assert sorted(ta) == sorted(tb)
    for k in ta:
        assert ta[k].dtype == tb[k].dtype and torch.equal(ta[k], tb[k]), k
    with torch.no_grad():
        assert torch.equal(I.call(a.eval(), x), I.call(b.eval(), x))


def _reports(result) -> list[tuple]:
    return [(r.index, r.kind, list(r.touched), r.notes) for r in result.steps]


def _layers(wl) -> list[str]:
    return [n for n, m in wl.model.named_modules() if (isinstance(m, (nn.Linear, nn.Conv2d))
            or type(m).__name__ == "Conv1D") and not isinstance(m, nn.modules.linear.NonDynamicallyQuantizableLinear)]


def recipes(wl) -> dict[str, list[dict]]:
    names = _layers(wl)
    some = names[: max(1, len(names) - 1)]
    cls = {"include_classifier": True}  # a model whose only Linear is its classifier (the GRU) still has a layer
    return {
        "prune+simulated": [{"kind": "prune_unstructured", "amount": 0.6, "targets": some, **cls},
                            {"kind": "fake_quant", "bits": 4, "targets": some, "overrides": {some[0]: 6}, **cls}],
        "simulated": [{"kind": "fake_quant", "bits": 3, "weights": "per_tensor"}],
        "prune-overrides": [{"kind": "prune_unstructured", "amount": 0.5, "overrides": {some[0]: 0.9}, **cls}],
        "global+simulated": [{"kind": "prune_unstructured", "amount": 0.7, "scope": "global", **cls},
                             {"kind": "fake_quant", "bits": 5, **cls}],
        "prune-twice": [{"kind": "prune_unstructured", "amount": 0.3, **cls},
                        {"kind": "prune_unstructured", "amount": 0.4, **cls}],
        "random+simulated": [{"kind": "prune_unstructured", "amount": 0.5, "importance": "random", **cls},
                             {"kind": "fake_quant", "bits": 6, **cls}],
    }


def check_equal_to_uncached(name: str) -> None:
    wl = _workload(name)
    x = I.take(wl.test.x, slice(0, 16))
    base = _snapshot(wl.model)
    cache = LayerCache(wl.model)
    for label, steps in recipes(wl).items():
        plain = _apply(wl, steps)
        for _ in range(2):  # compressed, then found in the cache
            cached = _apply(wl, steps, cache)
            assert_same(cached.model, plain.model, x)
            assert _reports(cached) == _reports(plain), label
    after = _snapshot(wl.model)
    assert sorted(after) == sorted(base) and all(torch.equal(after[k], base[k]) for k in base), "baseline changed"
    assert cache.hits > 0 and len(cache) > 0


@pytest.mark.parametrize("name", FAST)
def test_cached_recipes_equal_uncached(name):
    check_equal_to_uncached(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in zoo.ZOO if n not in FAST] + ["minilm-topics"])
def test_cached_recipes_equal_uncached_rest_of_zoo(name):
    check_equal_to_uncached(name)


def test_a_move_compresses_only_what_it_changed():
    wl = _workload("resnet")
    names = _layers(wl)
    cache = LayerCache(wl.model)

    def move(steps):
        hits, misses = cache.hits, cache.misses
        _apply(wl, steps, cache)
        return cache.hits - hits, cache.misses - misses

    cls = {"include_classifier": True}
    prune = {"kind": "prune_unstructured", "amount": 0.6, "targets": names, **cls}

    def quant(bits, targets=names):
        return {"kind": "fake_quant", "bits": bits, "targets": targets, **cls}

    assert move([prune, quant(4)]) == (0, 2 * len(names))
    # a bit-width move: the pruned layers are found, each is quantized again
    assert move([prune, quant(5)]) == (len(names), len(names))
    # a layer-choice move: one layer fewer, nothing compressed
    fewer = names[:-1]
    assert move([{**prune, "targets": fewer}, quant(5, fewer)]) == (2 * len(fewer), 0)
    # a sparsity move: every pruned layer is new, and so is each layer quantized after it
    assert move([{**prune, "amount": 0.7}, quant(5)]) == (0, 2 * len(names))


def test_whole_model_steps_bypass_the_cache():
    wl = _workload("resnet")
    cache = LayerCache(wl.model)
    for steps in ([{"kind": "prune_unstructured", "amount": 0.5, "scope": "global"}],
                  [{"kind": "prune_unstructured", "amount": 0.5, "importance": "random"}],
                  [{"kind": "fake_quant", "bits": 4, "activation_bits": 8}],
                  # a pruned layer the simulated step does not select is still folded by it: a whole-model step
                  [{"kind": "prune_unstructured", "amount": 0.5, "targets": _layers(wl)[:2]},
                   {"kind": "fake_quant", "bits": 4, "targets": _layers(wl)[2:]}]):
        _apply(wl, steps, cache)
    # only the last recipe's first step is per-layer: its two pruned layers
    assert len(cache) == 2 and cache.misses == 2
    with pytest.raises(Exception):  # errors are the technique's own, as without the cache
        _apply(wl, [{"kind": "prune_unstructured", "amount": 0.5, "targets": ["no.such.layer"]}], cache)


def test_variants_never_share_module_objects_and_the_cache_keeps_its_bound():
    wl = _workload("resnet")
    x = I.take(wl.test.x, slice(0, 8))
    one_layer = max(p.numel() for p in wl.model.parameters()) * 4
    cache = LayerCache(wl.model, max_bytes=3 * one_layer)
    steps = [{"kind": "prune_unstructured", "amount": 0.6}, {"kind": "fake_quant", "bits": 4}]
    a, b = _apply(wl, steps, cache), _apply(wl, steps, cache)
    assert cache.bytes <= cache.max_bytes
    assert_same(a.model, _apply(wl, steps).model, x)
    assert_same(b.model, a.model, x)
    shared = {id(m) for m in a.model.modules()} & {id(m) for m in b.model.modules()}
    assert not shared


def test_a_pruned_layer_keeps_the_baselines_weight_not_a_copy_and_that_costs_the_cache_nothing():
    """A pruned layer's original weight IS the baseline's tensor (BERT-base: a copy of every pruned weight would add
    340 MB to each configuration); the cache counts only what the layers add (mask, masked weight)."""
    wl = _workload("resnet")
    names = _layers(wl)
    cache = LayerCache(wl.model)
    prune = [{"kind": "prune_unstructured", "amount": 0.6, "targets": names, "include_classifier": True}]
    r = _apply(wl, prune, cache)
    base = {n: m.weight for n, m in wl.model.named_modules() if n in names}
    for n in names:
        orig = r.model.get_submodule(n).weight_orig
        assert orig.untyped_storage().data_ptr() == base[n].untyped_storage().data_ptr(), n
    added = sum(b.numel() * b.element_size() + r.model.get_submodule(n).weight.numel() * 4
                for n in names for b in [r.model.get_submodule(n).weight_mask])
    assert cache.bytes <= added + sum(m.bias.numel() * 4 for n, m in wl.model.named_modules()
                                      if n in names and getattr(m, "bias", None) is not None)
    assert_same(r.model, _apply(wl, prune).model, I.take(wl.test.x, slice(0, 8)))


def test_a_configuration_larger_than_the_cache_does_not_wash_it_out():
    """A recipe whose layers do not all fit: the cache keeps the ones that fitted (not, as least-recently-used order
    would, each one evicted just before the next move asks for it), so a move that changes one layer finds the
    others; the bound holds throughout."""
    wl = _workload("resnet")
    names = _layers(wl)
    per_layer = {n: wl.model.get_submodule(n).weight.numel() * 4 * 2 for n in names}  # mask + masked weight
    cache = LayerCache(wl.model, max_bytes=sum(per_layer.values()) // 2)

    def move(targets):
        hits = cache.hits
        _apply(wl, [{"kind": "prune_unstructured", "amount": 0.6, "targets": targets, "include_classifier": True}],
               cache)
        assert cache.bytes <= cache.max_bytes
        return cache.hits - hits

    move(names)
    assert 0 < len(cache) < len(names)
    assert move(names[:-1]) >= len(cache) - 1  # all it kept but (perhaps) the layer left out


def test_a_model_in_training_mode_gives_the_same_result():
    """``fake_quant`` puts the whole model in eval mode: on a model in training mode it is a whole-model step, and
    the cached build still equals the uncached one, training flags included."""
    import copy

    from compression_core.workload import _with

    wl = _workload("resnet")
    train = _with(wl, model=copy.deepcopy(wl.model).train())
    x = I.take(wl.test.x, slice(0, 8))
    cache = LayerCache(train.model)
    steps = [{"kind": "prune_unstructured", "amount": 0.6}, {"kind": "fake_quant", "bits": 4}]
    plain = _apply(train, steps)
    for _ in range(2):
        cached = _apply(train, steps, cache)
        assert_same(cached.model, plain.model, x)
    assert train.model.training  # the baseline is left as it was
