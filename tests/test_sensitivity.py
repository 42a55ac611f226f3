"""Sensitivity sweeps: exact baseline at 0 %, agreement with the prune/quantize families (oracles), CLI."""

from __future__ import annotations

import importlib
import json

import pytest
import torch

import sample_models
from compression_core import CompressionError, accuracy, prune, quantize
from compression_core.cli import main
from compression_core.prune import UnstructuredPruneConfig
from compression_core.quantize import FakeQuantConfig
from compression_core.sensitivity import PRUNE_LEVELS, QUANT_LEVELS, sensitivity


@pytest.fixture(scope="module")
def cnn():
    return sample_models.load("digits-cnn")


@pytest.fixture(scope="module")
def cnn_prune(cnn):
    return sensitivity(cnn.model, cnn, "prune", name="digits-cnn")


def _calib_acc(wl, model):
    return accuracy(model, wl.calib.x, wl.calib.y)


def test_zero_sparsity_is_exactly_the_baseline(cnn, cnn_prune):
    assert cnn_prune.baseline_accuracy == _calib_acc(cnn, cnn.model)
    for c in cnn_prune.layers:
        assert c.points[0] == (0.0, cnn_prune.baseline_accuracy)  # exact, not approximate
    assert [c.name for c in cnn_prune.layers] == ["conv1", "conv2", "fc1"]  # classifier fc2 left alone
    assert [p[0] for p in cnn_prune.layers[0].points] == list(PRUNE_LEVELS)


def test_lenet300_zero_point_exact_and_last_level_costs_accuracy():
    """(The sweep's time is measured by ``python -m benchmarks.sensitivity``, not asserted here.)"""
    wl = sample_models.load("mnist-lenet300")
    res = sensitivity(wl.model, wl, "prune")
    assert all(c.points[0][1] == res.baseline_accuracy == _calib_acc(wl, wl.model) for c in res.layers)
    assert res.layers[0].points[-1][1] < res.baseline_accuracy  # 95 % of fc1 costs accuracy


def test_points_match_the_prune_family(cnn, cnn_prune):
    """Oracle: each point equals pruning that layer alone with prune(UnstructuredPruneConfig) and measuring."""
    for c in cnn_prune.layers:
        for level, acc in c.points[1::3]:
            pruned = prune(cnn.model, UnstructuredPruneConfig(targets=[c.name], amount=level), cnn)
            assert acc == _calib_acc(cnn, pruned), (c.name, level)


def test_points_match_the_quantize_family(cnn):
    res = sensitivity(cnn.model, cnn, "quantize")
    assert [p[0] for p in res.layers[0].points] == list(QUANT_LEVELS)
    for c in res.layers:
        for bits, acc in c.points[::3]:
            q = quantize(cnn.model, FakeQuantConfig(targets=(c.name,), bits=bits), cnn)
            assert acc == _calib_acc(cnn, q), (c.name, bits)


def test_input_model_unchanged(cnn):
    before = {k: v.clone() for k, v in cnn.model.state_dict().items()}
    sensitivity(cnn.model, cnn, "prune", levels=[0.5, 0.9])
    after = cnn.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_classifier_included_on_request(cnn):
    res = sensitivity(cnn.model, cnn, "prune", include_classifier=True, levels=[0.5])
    assert [c.name for c in res.layers][-1] == "fc2"


def test_vit_head_importance():
    wl = sample_models.load("digits-vit")
    res = sensitivity(wl.model, wl, "prune", levels=[0.0], targets=["blocks.1.mlp.fc1"])
    assert res.layers[0].points[0][1] == res.baseline_accuracy
    assert res.heads is not None and len(res.heads) == 8  # 2 blocks x 4 heads
    assert any(h.accuracy_drop > 0 for h in res.heads)
    for h in res.heads:
        assert abs(h.accuracy + h.accuracy_drop - res.baseline_accuracy) < 1e-9


def test_bad_arguments_are_one_line_errors(cnn):
    for kw, field in [({"technique": "distill"}, "technique"), ({"levels": [1.5]}, "levels"),
                      ({"targets": ["nope"]}, "targets")]:
        with pytest.raises(CompressionError, match=f"^{field}") as e:
            sensitivity(cnn.model, cnn, **kw)
        assert "\n" not in str(e.value)
    with pytest.raises(CompressionError, match="^levels"):
        sensitivity(cnn.model, cnn, "quantize", levels=[1])


def test_cli_json(capsys):
    assert main(["sensitivity", "--model", "digits-mlp", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "digits-mlp" and out["technique"] == "prune"
    assert {"baseline_accuracy", "layers"} <= set(out)
    assert [layer["name"] for layer in out["layers"]] == ["fc1", "fc2"]
    assert out["layers"][0]["points"][0] == [0.0, out["baseline_accuracy"]]
    assert main(["sensitivity", "--model", "digits-mlp", "--technique", "quantize"]) == 0
    assert "8b" in capsys.readouterr().out
    assert main(["sensitivity", "--model", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: model:")


def test_cli_workers_give_the_same_json_and_refuse_zero(capsys):
    main(["sensitivity", "--model", "digits-cnn", "--json"])
    one = json.loads(capsys.readouterr().out)
    assert main(["sensitivity", "--model", "digits-cnn", "--json", "--workers", "2"]) == 0
    two = json.loads(capsys.readouterr().out)
    assert [c["points"] for c in two["layers"]] == [c["points"] for c in one["layers"]]
    assert main(["sensitivity", "--model", "digits-cnn", "--workers", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: --workers")


# ------------------------------------------------------------------------------------------ on several threads
@pytest.mark.parametrize("name", ["digits-cnn", "zoo:resnet", "zoo:token_transformer",
                                  pytest.param("zoo:gpt2", marks=pytest.mark.slow)])
@pytest.mark.parametrize("technique", ["prune", "quantize"])
def test_sweep_on_two_threads_gives_the_same_points(name, technique):
    """A sweep spread over two evaluation threads (each with its own working copy) gives the one-thread sweep's
    layers in the same order and exactly its points: a Sequential's cached inputs, replayed blocks, length groups
    (padded tokens) and a lower-is-better metric (perplexity)."""
    from tests import zoo

    wl = zoo.ZOO[name[4:]]() if name.startswith("zoo:") else sample_models.load(name)
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    seen: list[float] = []
    one = sensitivity(wl.model, wl, technique, levels=(0.3, 0.9) if technique == "prune" else (8, 3),
                      include_classifier=True, heads=False)
    two = sensitivity(wl.model, wl, technique, levels=(0.3, 0.9) if technique == "prune" else (8, 3),
                      include_classifier=True, heads=False, workers=2, progress=lambda f, m: seen.append(f))
    assert [c.name for c in two.layers] == [c.name for c in one.layers]
    assert [c.points for c in two.layers] == [c.points for c in one.layers]  # exact, not approximate
    assert two.baseline_accuracy == one.baseline_accuracy
    assert seen == sorted(seen) and len(seen) == len(one.layers) and seen[-1] == 1.0
    assert all(torch.equal(v, wl.model.state_dict()[k]) for k, v in before.items())  # the input untouched


def test_an_error_in_a_sweep_thread_reaches_the_caller(cnn):
    calls = []

    def progress(f, m):
        calls.append(f)
        if len(calls) == 2:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        sensitivity(cnn.model, cnn, "prune", levels=(0.5,), workers=2, progress=progress)


def test_a_big_model_sweeps_on_one_thread(cnn, monkeypatch):
    S = importlib.import_module("compression_core.sensitivity")  # the module (the package exports the function)

    assert S.sweep_workers(cnn.model, 2) == 2
    monkeypatch.setattr(S, "PARALLEL_MAX_BYTES", 1000)  # each thread holds a copy: over the bound, one thread
    assert S.sweep_workers(cnn.model, 2) == 1
