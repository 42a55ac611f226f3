"""Cached-activation evaluation equals a from-scratch evaluation: a variant that changed only a late block replays the
baseline's recorded earlier blocks and gives the same predictions, bit for bit; a variant that changed an early
layer (or added modules) replays nothing."""

from __future__ import annotations

import copy

import pytest
import torch

import sample_models
from compression_core import apply_recipe
from compression_core import inputs as I
from compression_core.incremental import IncrementalEvaluator


def _variant(wl, ref: str, steps: list[dict]):
    return apply_recipe({"version": 1, "model": ref, "steps": steps}, workload=wl, with_latency=False,
                        measure_before=False, measure_after=False).model


@pytest.fixture(scope="module")
def vit():
    return sample_models.load("digits-vit")


def _scratch(model, x):
    model.eval()
    with torch.no_grad():
        return I.call(model, x).float()


def test_a_late_change_replays_the_early_blocks_and_predicts_the_same(vit):
    x = I.take(vit.test.x, slice(0, 120))
    ev = IncrementalEvaluator(vit.model, x)
    late = _variant(vit, "digits-vit", [{"kind": "prune_unstructured", "amount": 0.6,
                                         "targets": ["blocks.1.mlp.fc1", "blocks.1.mlp.fc2"]}])
    assert ev.first_changed(late) == "blocks.1.mlp.fc1"
    assert "blocks.0" in ev.replayed(late) and "blocks.1" not in ev.replayed(late)
    assert torch.equal(ev.predict(late), _scratch(late, x))
    assert ev.replays == 1
    y = vit.test.y[:120]
    assert ev.score(late, y, vit.metric) == float(vit.metric(_scratch(late, x), y))  # the metric too


def test_an_early_change_replays_nothing_and_an_unchanged_model_replays_all(vit):
    x = I.take(vit.test.x, slice(0, 64))
    ev = IncrementalEvaluator(vit.model, x)
    early = _variant(vit, "digits-vit", [{"kind": "fake_quant", "bits": 4}])
    assert ev.replayed(early) == [] or all(not n.startswith("blocks.0") for n in ev.replayed(early))
    assert torch.equal(ev.predict(early), _scratch(early, x))
    same = copy.deepcopy(vit.model)
    assert torch.equal(ev.predict(same), _scratch(vit.model, x))
    before = [p.detach().clone() for p in vit.model.parameters()]
    ev.predict(same)
    assert all(torch.equal(a, b) for a, b in zip(before, vit.model.parameters()))  # the baseline is only read


@pytest.mark.slow
def test_minilm_last_block_move_replays_five_blocks_and_predicts_the_same():
    from compression_core import resolve_workload

    wl = resolve_workload("minilm-topics")
    x = I.take(wl.test.x, slice(0, 60))
    ev = IncrementalEvaluator(wl.model, x)
    last = [n for n, m in wl.model.named_modules() if isinstance(m, torch.nn.Linear) and ".layer.5." in n]
    v = _variant(wl, "minilm-topics", [{"kind": "prune_unstructured", "amount": 0.5, "targets": last}])
    replayed = ev.replayed(v)
    assert {f"encoder.encoder.layer.{i}" for i in range(5)} <= set(replayed)
    assert torch.equal(ev.predict(v).argmax(-1), _scratch(v, x).argmax(-1))
    assert torch.allclose(ev.predict(v), _scratch(v, x), atol=1e-5)


def _cached(wl, ref: str, steps: list[dict], layers):
    return apply_recipe({"version": 1, "model": ref, "steps": steps}, workload=wl, with_latency=False,
                        measure_before=False, measure_after=False, layers=layers).model


def _page_move(targets: list[str], bits: int = 6) -> list[dict]:
    """What Explore applies: every chosen layer pruned, then the same layers simulated-quantized."""
    return [{"kind": "prune_unstructured", "amount": 0.5, "targets": targets},
            {"kind": "fake_quant", "bits": bits, "targets": targets}]


def test_a_move_sharing_layers_with_the_previous_one_replays_its_blocks_and_predicts_the_same(vit):
    """Every layer differs from the baseline (nothing of the baseline's recording replays), but dropping the last
    chosen layer leaves the previous move's earlier blocks as they were: those are replayed, bit for bit."""
    from compression_core.layer_cache import LayerCache

    x = I.take(vit.test.x, slice(0, 120))
    ev = IncrementalEvaluator(vit.model, x)
    cache = LayerCache(vit.model)
    names = [n for n, m in vit.model.named_modules() if isinstance(m, torch.nn.Linear)]
    first = _cached(vit, "digits-vit", _page_move(names), cache)
    assert torch.equal(ev.predict(first), _scratch(first, x))
    assert ev.variant_replays == 0 and ev.replayed(first) == []
    fewer = _cached(vit, "digits-vit", _page_move(names[:-3]), cache)  # the last block's MLP and the head left out
    assert ev.replayed(fewer) == []  # the baseline's recording: nothing (the first layer differs)
    assert torch.equal(ev.predict(fewer), _scratch(fewer, x))
    assert ev.variant_replays == 1
    other_bits = _cached(vit, "digits-vit", _page_move(names[:-3], bits=5), cache)  # every layer differs again
    assert torch.equal(ev.predict(other_bits), _scratch(other_bits, x))
    assert ev.variant_replays == 1


def test_a_layer_changed_after_the_cache_built_it_is_not_replayed_from_an_earlier_variant(vit):
    """A cache-built layer changed in place, or a whole-model step after the cached ones (its layers' keys
    dropped), ends the match with earlier variants: the predictions stay a from-scratch forward's."""
    from compression_core.layer_cache import LayerCache

    x = I.take(vit.test.x, slice(0, 64))
    ev = IncrementalEvaluator(vit.model, x)
    cache = LayerCache(vit.model)
    names = [n for n, m in vit.model.named_modules() if isinstance(m, torch.nn.Linear)]
    a = _cached(vit, "digits-vit", _page_move(names), cache)
    ev.predict(a)
    b = _cached(vit, "digits-vit", _page_move(names), cache)  # the same configuration, its own module objects
    w = b.get_submodule(names[0]).weight_orig
    assert all(w is not p for p in vit.model.parameters())  # the cache's own tensor, not the baseline's
    with torch.no_grad():
        w.mul_(0.5)  # ... one of them changed in place (same key, new values)
    assert torch.equal(ev.predict(b), _scratch(b, x))
    assert ev.variant_replays == 0
    steps = _page_move(names) + [{"kind": "finetune", "epochs": 1, "lr": 1e-3}]
    c = _cached(vit, "digits-vit", steps, cache)
    assert ev.signature(c) is None
    assert torch.equal(ev.predict(c), _scratch(c, x))
    assert ev.variant_replays == 0
