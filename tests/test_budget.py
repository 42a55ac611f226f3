"""fit_budget: a fit meets its budget (file size or accuracy drop), bad targets are one-line errors, the explicit
recipe it writes reproduces the fitted model."""

from __future__ import annotations

import pytest
import torch

import sample_models
from compression_core import CompressionError, accuracy, measure, prune, quantize, sparse_size_bytes
from compression_core.budget import FitBudgetConfig, budget_config, explicit_recipe, fit_budget, fitted_recipe
from compression_core.prune import UnstructuredPruneConfig
from compression_core.recipe import apply_recipe, load_recipe, recipe_to_yaml, step_kinds
from compression_core.sensitivity import sensitivity


@pytest.fixture(scope="module")
def cnn():
    return sample_models.load("digits-cnn")


@pytest.fixture(scope="module")
def curves(cnn):
    return sensitivity(cnn.model, cnn, "prune")


def test_fit_budget_is_a_recipe_step_kind():
    assert step_kinds()["fit_budget"] is FitBudgetConfig


@pytest.mark.parametrize("fraction", [0.3, 0.6])
def test_size_fit_meets_its_budget(cnn, curves, fraction):
    base = sparse_size_bytes(cnn.model)
    budget = int(base * fraction)
    fit = fit_budget(cnn.model, cnn, {"max_size_bytes": budget}, curves=curves)
    pruned = prune(cnn.model, fit.step(), cnn)
    assert sparse_size_bytes(pruned) == fit.size_bytes <= budget  # the real sparse-encoded file
    assert set(fit.choice) == {"conv1", "conv2", "fc1"}  # classifier left alone
    assert fit.accuracy == accuracy(pruned, cnn.calib.x, cnn.calib.y)


def test_size_fit_beats_uniform_at_the_same_size(cnn, curves):
    uniform = prune(cnn.model, UnstructuredPruneConfig(amount=0.8, scope="layer"), cnn)
    budget = sparse_size_bytes(uniform)
    fit = fit_budget(cnn.model, cnn, {"max_size_bytes": budget}, curves=curves)
    fitted = prune(cnn.model, fit.step(), cnn)
    test = cnn.test
    assert accuracy(fitted, test.x, test.y) > accuracy(uniform, test.x, test.y)


def test_accuracy_fit_meets_its_budget(cnn, curves):
    fit = fit_budget(cnn.model, cnn, FitBudgetConfig(max_accuracy_drop=1.0), curves=curves)
    pruned = prune(cnn.model, fit.step(), cnn)
    drop = (fit.baseline_accuracy - accuracy(pruned, cnn.calib.x, cnn.calib.y)) * 100
    assert drop <= 1.0 + 1e-9
    assert fit.size_bytes < fit.baseline_size_bytes  # it did compress


def test_quantize_size_fit_meets_theoretical_budget(cnn):
    base = measure(cnn.model, cnn, with_latency=False).size_bytes
    budget = base // 5
    fit = fit_budget(cnn.model, cnn, {"technique": "quantize", "max_size_bytes": budget})
    assert fit.size_kind == "theoretical"
    q = quantize(cnn.model, fit.step(), cnn)
    stats = measure(q, cnn, with_latency=False)
    assert stats.simulated and stats.theoretical_size_bytes == fit.size_bytes <= budget


@pytest.mark.slow
def test_recipe_step_applies_and_explicit_recipe_reproduces_it(cnn):
    budget = int(sparse_size_bytes(cnn.model) * 0.5)
    recipe = {"version": 1, "model": "digits-cnn", "steps": [{"kind": "fit_budget", "max_size_bytes": budget}]}
    res = apply_recipe(recipe, with_latency=False, measure_before=False)
    assert res.after.sparse_size_bytes <= budget
    explicit = explicit_recipe(recipe)
    step = explicit.steps[0]
    assert step.kind == "prune_unstructured" and set(step.overrides) == {"conv1", "conv2", "fc1"}
    again = apply_recipe(load_recipe(recipe_to_yaml(explicit)), with_latency=False, measure_before=False)
    assert again.after.sparse_size_bytes == res.after.sparse_size_bytes
    assert again.after.accuracy == res.after.accuracy
    for k, v in res.model.state_dict().items():
        assert torch.equal(v, again.model.state_dict()[k])


def test_fitted_recipe_of_a_fit(cnn, curves):
    fit = fit_budget(cnn.model, cnn, {"max_accuracy_drop": 0.0}, curves=curves)
    r = fitted_recipe("digits-cnn", fit)
    assert r.model == "digits-cnn" and r.steps[0].overrides == fit.choice


def test_input_model_unchanged(cnn, curves):
    before = {k: v.clone() for k, v in cnn.model.state_dict().items()}
    fit_budget(cnn.model, cnn, {"max_size_bytes": 40_000}, curves=curves)
    assert all(torch.equal(before[k], v) for k, v in cnn.model.state_dict().items())


@pytest.mark.parametrize("fields,where", [
    ({"max_size_bytes": -5}, "max_size_bytes"),
    ({"max_size_bytes": 0}, "max_size_bytes"),
    ({"max_accuracy_drop": -1.0}, "max_accuracy_drop"),
    ({}, "max_size_bytes / max_accuracy_drop"),
    ({"max_size_bytes": 10_000, "max_accuracy_drop": 1.0}, "max_size_bytes / max_accuracy_drop"),
    ({"max_size_bytes": 1000, "technique": "distill"}, "technique"),
])
def test_bad_targets_are_one_line_errors(fields, where):
    with pytest.raises(CompressionError) as e:
        budget_config(fields)
    assert str(e.value).startswith(where) and "\n" not in str(e.value)


def test_bad_target_in_a_recipe_names_the_step_field():
    with pytest.raises(CompressionError, match=r"^steps\[0\]\.max_size_bytes: must be > 0, got -5"):
        load_recipe({"version": 1, "model": "digits-cnn", "steps": [{"kind": "fit_budget", "max_size_bytes": -5}]})


@pytest.mark.slow
def test_impossible_size_is_a_one_line_error(cnn, curves):
    with pytest.raises(CompressionError, match=r"^max_size_bytes: 1000 is smaller than the smallest reachable") as e:
        fit_budget(cnn.model, cnn, {"max_size_bytes": 1000}, curves=curves)
    assert "\n" not in str(e.value)
    with pytest.raises(CompressionError, match=r"steps\[0\]\.max_size_bytes: 1000 is smaller"):
        apply_recipe({"version": 1, "model": "digits-cnn", "steps": [{"kind": "fit_budget", "max_size_bytes": 1000}]},
                     with_latency=False, measure_before=False)


def test_bundle_with_a_fit_reloads_identically(tmp_path):
    """Replay rebuilds the masks of every selected layer (prune) and the saved weights load over them."""
    from compression_core.bundle import load_bundle, save_bundle

    recipe = {"version": 1, "model": "digits-mlp",
              "steps": [{"kind": "fit_budget", "max_accuracy_drop": 1.0}, {"kind": "finetune", "epochs": 1}]}
    res = apply_recipe(recipe, with_latency=False, measure_before=False)
    save_bundle(tmp_path / "fit.clb", res.recipe, res.model)
    _, model = load_bundle(tmp_path / "fit.clb")
    x = sample_models.data("digits-mlp").test.x
    assert torch.equal(model(x), res.model(x))
