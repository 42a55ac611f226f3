"""One line a user can act on: a collapsed result says so and what helps (library, apply, the CLI, Explore); a budget
fit reports its test-split drop beside the calibration one; bad workloads are refused or noted in one line; what a
workload's package prints never reaches stdout."""

from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from compression_core.advisories import CollapseRule, chance, collapse, num_classes
from compression_core.budget import fit_budget
from compression_core.cli import main
from compression_core.recipe import apply_recipe
from compression_core.workload import ACCURACY, Metric, Workload, resolve_workload

APP = str(Path(__file__).resolve().parent.parent / "dashboard" / "app.py")
COLLAPSING = {"version": 1, "model": "digits-cnn", "steps": [{"kind": "prune_structured", "amount": 0.8}]}


def classifier(classes: int = 10, metric=ACCURACY, ref: str = "my.py:wl"):
    return SimpleNamespace(metric=metric, info={"num_classes": classes}, reference=ref, name="wl")


# ---------------------------------------------------------------------------------------------- the rule
def test_below_chance_and_large_drops_collapse_small_drops_do_not():
    wl = classifier(10)
    assert chance(wl) == pytest.approx(0.1)
    line = collapse(0.98, 0.12, wl)
    assert line.startswith("collapsed: accuracy 98.00 % -> 12.00 %") and "1.5x chance" in line and "\n" not in line
    assert "`finetune` step" in line and "a lower setting" in line
    assert "compression-lab sensitivity --model my.py:wl" in line and "Sensitivity page" in line
    assert "down 28.0 points" in collapse(0.98, 0.70, wl)
    assert collapse(0.98, 0.95, wl) is None
    assert collapse(None, 0.12, wl) is not None and collapse(None, 0.5, wl) is None  # no baseline: chance only
    stats = SimpleNamespace(accuracy=0.98)
    assert collapse(stats, {"accuracy": 0.1}, wl) is not None  # ModelStats or its dict


def test_the_rule_is_changeable():
    wl = classifier(10)
    assert collapse(0.98, 0.70, wl, CollapseRule(max_drop_points=30)) is None
    assert collapse(0.98, 0.12, wl, CollapseRule(chance_factor=1.1, max_drop_points=90)) is None
    assert collapse(0.98, 0.90, wl, CollapseRule(max_drop_points=5)) is not None
    with pytest.raises(Exception):
        CollapseRule().chance_factor = 2  # frozen


def test_lower_is_better_metrics_collapse_when_more_than_doubled():
    ppl = Metric("perplexity", lambda o, t: 0.0, percent=False, higher_is_better=False)
    wl = classifier(10, metric=ppl)
    assert chance(wl) is None
    assert "2.2x its value before" in collapse(20.0, 45.0, wl)
    assert collapse(20.0, 30.0, wl) is None and collapse(20.0, 5.0, wl) is None
    assert collapse(20.0, 50.0, wl, CollapseRule(max_factor=3)) is None
    score = Metric("score", lambda o, t: 0.0, percent=False)
    assert collapse(10.0, 4.0, classifier(10, metric=score)) is not None
    assert collapse(10.0, 6.0, classifier(10, metric=score)) is None


def test_classes_come_from_the_listing_or_the_model_outputs():
    x, y = torch.randn(20, 4), torch.randint(0, 3, (20,))
    wl = Workload(name="three", model=nn.Linear(4, 3), test=(x, y))
    assert num_classes(wl) == 3 and chance(wl) == pytest.approx(1 / 3)
    assert num_classes(classifier(6)) == 6


# ---------------------------------------------------------------------------------------- apply and CLI
def test_apply_recipe_reports_a_collapse():
    res = apply_recipe(COLLAPSING, with_latency=False)
    assert res.after.accuracy < res.before.accuracy - 0.2
    assert len(res.advisories) == 1 and res.advisories[0].startswith("collapsed: accuracy")
    assert res.to_json_dict()["advisories"] == res.advisories
    fine = apply_recipe({**COLLAPSING, "steps": [{"kind": "prune_unstructured", "amount": 0.3}]}, with_latency=False)
    assert fine.advisories == []


def test_apply_command_says_collapsed_in_text_and_json(tmp_path, capsys):
    path = tmp_path / "collapse.json"
    path.write_text(json.dumps(COLLAPSING))
    assert main(["apply", str(path), "--no-latency", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["advisories"] and out["advisories"][0].startswith("collapsed:")
    assert main(["apply", str(path), "--no-latency"]) == 0
    assert any(ln.startswith("collapsed: accuracy") for ln in capsys.readouterr().out.splitlines())


def test_fit_budget_reports_the_test_split_beside_calibration():
    wl = resolve_workload("digits-mlp")
    fit = fit_budget(wl.model, wl, {"max_accuracy_drop": 2})
    assert fit.calibration_drop_points <= 2 + 1e-9
    assert fit.test_baseline_accuracy == pytest.approx(wl.score(wl.model))
    assert fit.test_drop_points == pytest.approx((fit.test_baseline_accuracy - fit.test_accuracy) * 100)
    differ = abs(fit.test_drop_points - fit.calibration_drop_points) > max(1.0, 100 / len(wl.test))
    assert (fit.split_note is not None) == differ
    if fit.test_drop_points > 2:
        assert "missed on test" in fit.split_note and "\n" not in fit.split_note
    res = apply_recipe({"version": 1, "model": "digits-mlp", "steps": [
        {"kind": "fit_budget", "max_accuracy_drop": 2}]}, with_latency=False)
    assert any(a.startswith("steps[0] (fit_budget): the fit loses") for a in res.advisories) == differ


# ------------------------------------------------------------------------------------------ bad workloads
WORKLOADS = textwrap.dedent("""
    import os
    import torch
    from torch import nn
    from compression_core import Workload

    print("hello from the model package")
    os.write(1, b"and from C code\\n")
    torch.manual_seed(0)
    X, Y = torch.randn(40, 4), torch.randint(0, 3, (40,))

    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x), x.sum()

    def noisy():
        print("building")
        return Workload(name="noisy", model=Pair(), test=(X.double(), Y), train=(X.double(), Y))

    def shifted():
        return Workload(name="shifted", model=nn.Linear(4, 3), test=(X, Y + 1))

    def onehot():
        return Workload(name="onehot", model=nn.Linear(4, 3), test=(X, nn.functional.one_hot(Y, 3)))

    class NaN(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x) * float("nan")

    def nan():
        return Workload(name="nan", model=NaN(), test=(X, Y))
""")


@pytest.fixture()
def user_file(tmp_path):
    path = tmp_path / "user_models.py"
    path.write_text(WORKLOADS)
    return path


@pytest.mark.parametrize("attr, words", [
    ("shifted", "test labels run 1..3 but the model has 3 outputs"),
    ("onehot", "targets have shape (40, 3)"),
    ("nan", "are NaN or infinite"),
])
def test_bad_workloads_are_refused_in_one_line(user_file, attr, words, capfd):
    assert main(["measure", "--model", f"{user_file}:{attr}", "--json"]) == 2
    out, err = capfd.readouterr()
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and words in lines[0], err
    assert "hello from the model package" not in out and "and from C code" not in out


def test_a_package_that_prints_leaves_json_valid_and_casts_are_stated(user_file, tmp_path, capfd):
    ref = f"{user_file}:noisy"
    assert main(["measure", "--model", ref, "--json"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["model"] == "noisy"
    assert "hello from the model package" in err and "and from C code" in err and "building" in err
    assert "note: inputs: the data is float64; every forward casts it to float32" in err
    assert "note: outputs: the model returns a tuple of 2; its first element (3,)" in err
    recipe = tmp_path / "r.json"
    recipe.write_text(json.dumps({"version": 1, "model": ref, "steps": [{"kind": "prune_unstructured", "amount": 0.3,
                                                                     "include_classifier": True}]}))
    assert main(["apply", str(recipe), "--json", "--no-latency"]) == 0
    out, _ = capfd.readouterr()
    advice = json.loads(out)["advisories"]
    assert any(a.startswith("inputs: the data is float64") for a in advice)
    assert any(a.startswith("outputs: the model returns a tuple") for a in advice)
    assert main(["models", "--workload", ref, "--json"]) == 0
    out, _ = capfd.readouterr()
    row = json.loads(out)[-1]
    assert row["name"] == "noisy" and row["metric"] == "accuracy" and 0 <= row["baseline_accuracy"] <= 1
    assert main(["models", "--workload", ref]) == 0
    line = next(ln for ln in capfd.readouterr().out.splitlines() if ln.startswith("noisy"))
    assert "accuracy" in line and " - " not in line


def test_torch_pruning_warnings_stay_inside_the_adapter(monkeypatch, recwarn):
    import torch_pruning as tp

    from compression_core.graph import build_graph

    real = tp.DependencyGraph.get_pruning_group

    def noisy(self, *args, **kwargs):
        warnings.warn_explicit("Torch-Pruning noise", UserWarning, "graph.py", 1,
                               module="torch_pruning.dependency.graph")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(tp.DependencyGraph, "get_pruning_group", noisy)
    wl = resolve_workload("digits-cnn")
    warnings.simplefilter("always")
    graph = build_graph(wl.model, wl.test.x[:2])
    assert graph.units("channels")
    assert not [w for w in recwarn if "Torch-Pruning noise" in str(w.message)]


# ----------------------------------------------------------------------------------------------- Explore
def test_explore_warns_under_the_metrics_and_shows_peak_ram():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    assert any("peak RAM at batch 1" in c.value for c in at.caption)
    at.radio(key="x_prune_digits-cnn").set_value("structured (neurons / channels / heads)").run()
    at.slider(key="x_prune_structured_amount").set_value(0.9).run()
    assert not at.exception, at.exception
    labels = {m.label: m.value for m in at.metric}
    assert "Peak RAM (batch 1)" in labels
    warned = [w.value for w in at.warning if w.value.startswith("collapsed:")]
    assert len(warned) == 1 and "Sensitivity page" in warned[0]
    at.slider(key="x_prune_structured_amount").set_value(0.1).run()
    assert not [w.value for w in at.warning if w.value.startswith("collapsed:")]
