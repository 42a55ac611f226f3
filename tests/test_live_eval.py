"""A move's incremental measurement equals a from-scratch one: ``MoveEvaluator`` scores a variant on the preview
subset and the whole test set by replaying the baseline's unchanged blocks, and its metric, outputs and the
workload's extra metrics (which call the model themselves) equal ``measure``'s; an extra metric that calls the model
on other inputs is never given replayed outputs; neither the baseline nor the variant is left patched."""

from __future__ import annotations

import pytest
import torch

import sample_models
from compression_core import apply_recipe, measure
from compression_core import inputs as I
from compression_core.live_eval import MoveEvaluator
from compression_core.workload import _with

CALLS: list[str] = []


def _mean_logit(model, wl, n=None):
    """An extra metric that calls the model as a whole on the evaluated inputs (replay allowed)."""
    x = wl.test.x if n is None else I.head(wl.test.x, n)
    with torch.no_grad():
        return float(I.call(model.eval(), x).mean())


def _reversed_max(model, wl, n=None):
    """An extra metric that calls the model on OTHER inputs (the same items reversed): never replayed."""
    x = wl.test.x if n is None else I.head(wl.test.x, n)
    x = I.take(x, torch.arange(I.n_items(x) - 1, -1, -1))
    with torch.no_grad():
        return float(I.call(model.eval(), x)[:5].max())


@pytest.fixture(scope="module")
def vit():
    wl = sample_models.load("digits-vit")
    return _with(wl, info={**dict(wl.info or {}), "extra_metrics": {"mean_logit": _mean_logit,
                                                                    "reversed_max": _reversed_max}})


def _variant(wl, targets, amount=0.6):
    return apply_recipe({"version": 1, "model": "digits-vit", "steps": [
        {"kind": "prune_unstructured", "amount": amount, "targets": targets}]}, workload=wl, with_latency=False,
        measure_before=False, measure_after=False).model


def _no_patches(model) -> bool:
    return all("forward" not in m.__dict__ for m in model.modules())


@pytest.mark.slow
def test_late_change_full_and_preview_equal_from_scratch_measurements(vit):
    ev = MoveEvaluator(vit, preview_n=100)
    late = _variant(vit, ["blocks.1.mlp.fc1", "blocks.1.mlp.fc2"])
    metric, extra, out = ev.full(late)
    ref = measure(late, vit, with_latency=False)
    assert metric == ref.accuracy and extra == ref.extra
    late.eval()
    with torch.no_grad():
        assert torch.equal(out, I.call(late, vit.test.x).float())
    assert ev._evs["full"].replays == 1  # the late change really replayed the first block
    pm, pextra = ev.preview(late)
    head = _with(vit, test=type(vit.test)(I.head(vit.test.x, 100), vit.test.y[:100]))
    pref = measure(late, head, with_latency=False)
    assert pm == pref.accuracy and pextra == {k: v for k, v in pref.extra.items()}
    assert _no_patches(late) and _no_patches(vit.model)
    assert ev.bytes > 0


def test_every_later_move_stays_exact_and_the_baseline_is_only_read(vit):
    before = [p.detach().clone() for p in vit.model.parameters()]
    ev = MoveEvaluator(vit, preview_n=50)
    for targets in (["blocks.0.attn.qkv"], ["blocks.1.mlp.fc2"], ["blocks.1.attn.proj"]):
        v = _variant(vit, targets, amount=0.8)
        metric, extra, _ = ev.full(v)
        ref = measure(v, vit, with_latency=False)
        assert (metric, extra) == (ref.accuracy, ref.extra), targets
    assert all(torch.equal(a, b) for a, b in zip(before, vit.model.parameters()))


@pytest.mark.slow
def test_minilm_last_block_move_with_fidelity_equals_measure():
    from compression_core import resolve_workload

    wl = resolve_workload("minilm-topics")
    ev = MoveEvaluator(wl, preview_n=60)
    last = [n for n, m in wl.model.named_modules() if isinstance(m, torch.nn.Linear) and ".layer.5." in n]
    v = apply_recipe({"version": 1, "model": "minilm-topics", "steps": [
        {"kind": "prune_unstructured", "amount": 0.5, "targets": last}]}, workload=wl, with_latency=False,
        measure_before=False, measure_after=False).model
    metric, extra, _ = ev.full(v)
    ref = measure(v, wl, with_latency=False)
    assert metric == pytest.approx(ref.accuracy, abs=1e-9)
    assert extra["fidelity"] == pytest.approx(ref.extra["fidelity"], abs=1e-5)
    assert ev._evs["full"].replays == 1


def test_the_extra_metrics_pass_replays_the_variants_own_blocks(vit, monkeypatch):
    block_cls = type(vit.model.blocks[0])
    calls = []
    real = block_cls.forward
    monkeypatch.setattr(block_cls, "forward", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    ev = MoveEvaluator(vit, preview_n=None)
    ev.full(vit.model)  # records the baseline (2 block runs) and scores it
    early = _variant(vit, ["blocks.0.attn.qkv"])
    calls.clear()
    metric, extra, _ = ev.full(early)
    # scoring runs both blocks (the change is in the first); mean_logit (same inputs) replays the variant's own
    # block outputs: 0 runs; reversed_max (other inputs) runs both blocks as written
    assert len(calls) == 4
    assert (metric, extra) == ((r := measure(early, vit, with_latency=False)).accuracy, r.extra)


def test_a_stopped_full_pass_raises_and_leaves_the_evaluator_exact(vit):
    """``full(model, stop=...)``: a stop that says yes ends the pass with Interrupted before anything is scored; the
    next passes (with a stop that says no, and without one) are still exactly a from-scratch measurement."""
    from compression_core.live_eval import Interrupted

    ev = MoveEvaluator(vit, preview_n=100)
    late = _variant(vit, ["blocks.1.mlp.fc1"])
    hooks = [len(m._forward_pre_hooks) for m in late.modules()]
    asked = []
    with pytest.raises(Interrupted):
        ev.full(late, stop=lambda: asked.append(1) or len(asked) > 3)  # gives way after a few modules
    assert _no_patches(late)
    replays = ev._evs["full"].replays
    metric, extra, out = ev.full(late, stop=lambda: False)
    ref = measure(late, vit, with_latency=False)
    assert metric == ref.accuracy and extra == ref.extra
    assert ev._evs["full"].replays == replays + 1  # a pass that may be stopped still replays the first block
    assert ev.full(late)[0] == metric
    assert [len(m._forward_pre_hooks) for m in late.modules()] == hooks  # the checks were on a private copy only


def test_prepare_records_the_preview_inputs_and_changes_no_number(vit):
    """``prepare("preview")`` (a page opening a model) records the baseline's block outputs on the preview subset
    ahead of the first move; that move's preview is then the same as without it."""
    ev = MoveEvaluator(vit, preview_n=50)
    ev.prepare("preview")
    assert "preview" in ev._evs and "full" not in ev._evs and ev.bytes > 0
    variant = _variant(vit, ["blocks.1.mlp.fc2"], amount=0.7)
    assert ev.preview(variant) == MoveEvaluator(vit, preview_n=50).preview(variant)
    with pytest.raises(ValueError, match="no preview subset"):
        MoveEvaluator(vit, preview_n=None).prepare("preview")


def test_layer_choice_moves_built_from_the_layer_cache_replay_the_previous_move_and_equal_measure(vit):
    """Explore's moves on a big model: every chosen layer pruned and simulated-quantized, built from the move
    evaluator's layer cache; each move drops the last chosen layer. Every layer differs from the baseline, so only
    the previous move's kept blocks can be replayed: they are, on both input sets, and every number equals
    ``measure``'s from scratch."""
    ev = MoveEvaluator(vit, preview_n=100)
    names = [n for n, m in vit.model.named_modules() if isinstance(m, torch.nn.Linear)]
    head = _with(vit, test=type(vit.test)(I.head(vit.test.x, 100), vit.test.y[:100]))
    for k in (len(names), len(names) - 1, len(names) - 2):
        steps = [{"kind": "prune_unstructured", "amount": 0.5, "targets": names[:k]},
                 {"kind": "fake_quant", "bits": 5, "targets": names[:k]}]
        v = apply_recipe({"version": 1, "model": "digits-vit", "steps": steps}, workload=vit, with_latency=False,
                         measure_before=False, measure_after=False, layers=ev.layers).model
        pm, pextra = ev.preview(v)
        metric, extra, _ = ev.full(v)
        ref, pref = measure(v, vit, with_latency=False), measure(v, head, with_latency=False)
        assert (metric, extra) == (ref.accuracy, ref.extra) and (pm, pextra) == (pref.accuracy, pref.extra), k
        assert _no_patches(v) and _no_patches(vit.model)
    assert ev._evs["preview"].variant_replays == 2 and ev._evs["full"].variant_replays == 2
