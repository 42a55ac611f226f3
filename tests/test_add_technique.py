"""CONTRIBUTING's "Add a technique" example, run as written: its module (config + handler), written to a temporary
folder and imported, is found in the API (registered_configs, prune), the recipe schema, the CLI, bundles and the
dashboard's Explore page with no other edit. Also: the registry is the only list (duplicate kinds refused, the
verbs ask the family, Recipe is built when asked)."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

import compression_core
from compression_core import CompressionError, prune, quantize, resolve_workload
from compression_core.bundle import bundle_bytes, load_bundle, save_bundle
from compression_core.cli import main
from compression_core.recipe import recipe_class, recipe_schema, step_kinds
from compression_core.technique import configs_of_family, register, registered_configs, technique_ui, unregister

ROOT = Path(__file__).resolve().parent.parent
MODULE = "contributing_example_technique"


def contributing_example() -> str:
    """The first ```python block under CONTRIBUTING.md's "## Add a technique" heading, dedented."""
    text = (ROOT / "CONTRIBUTING.md").read_text()
    section = text[text.index("## Add a technique"):]
    section = section[: section.index("\n## ", 1)] if "\n## " in section[1:] else section
    block = re.search(r"^( *)```python\n(.*?)^\1```", section, re.S | re.M)
    assert block, "CONTRIBUTING.md's 'Add a technique' section has no ```python block"
    indent = block.group(1)
    return "".join(line[len(indent):] if line.startswith(indent) else line
                   for line in block.group(2).splitlines(keepends=True))


@pytest.fixture
def mine(tmp_path, monkeypatch):
    """The example module imported from a temporary folder; unregistered (and forgotten) afterwards."""
    (tmp_path / f"{MODULE}.py").write_text(contributing_example())
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(registered_configs())
    try:
        yield importlib.import_module(MODULE)
    finally:
        for cls in [c for c in registered_configs() if c not in before]:  # incl. a class defined by a reload
            unregister(cls)
        sys.modules.pop(MODULE, None)
    assert set(registered_configs()) == before


@pytest.fixture(scope="module")
def mlp():
    return resolve_workload("digits-mlp")


def test_the_example_is_complete():
    code = contributing_example()
    for needle in ("class MyPruneConfig(StepConfig)", "ui = TechniqueUI(", 'family="prune"', "@register(MyPruneConfig)",
                   "def _mine("):
        assert needle in code, needle
    text = (ROOT / "CONTRIBUTING.md").read_text()
    assert "family" in text and "prune()" in text and "quantize()" in text  # the family decides the verb


def test_registered_and_accepted_by_the_verb_of_its_family(mine, mlp):
    cfg_cls = mine.MyPruneConfig
    assert cfg_cls in registered_configs()
    assert cfg_cls in configs_of_family("prune") and technique_ui(cfg_cls).family == "prune"
    before = {k: v.clone() for k, v in mlp.model.state_dict().items()}
    out = prune(mlp.model, cfg_cls(amount=0.5), mlp)
    assert all(torch.equal(before[k], v) for k, v in mlp.model.state_dict().items())  # the input is unchanged
    fc = [n for n, m in out.named_modules() if isinstance(m, torch.nn.Linear)]
    first = out.get_submodule(fc[0]).weight
    assert (first == 0).any()  # the handler ran
    kept = out.get_submodule(fc[-1]).weight  # the classifier is left alone by default
    assert torch.equal(kept, mlp.model.get_submodule(fc[-1]).weight)
    with pytest.raises(CompressionError, match="^kind: 'prune_mine' is a prune technique, not a quantization"):
        quantize(mlp.model, cfg_cls())


def test_in_the_recipe_schema_and_the_recipe_class(mine):
    assert step_kinds()["prune_mine"] is mine.MyPruneConfig
    assert "prune_mine" in str(recipe_schema())
    recipe = compression_core.Recipe(model="digits-mlp", steps=[{"kind": "prune_mine", "amount": 0.3}])
    assert recipe.steps == [mine.MyPruneConfig(amount=0.3)]
    assert compression_core.Recipe is recipe_class()


def test_in_the_cli(mine, tmp_path, capsys):
    assert main(["schema"]) == 0
    assert '"prune_mine"' in capsys.readouterr().out
    path = tmp_path / "mine.yaml"
    path.write_text("version: 1\nmodel: digits-mlp\nsteps:\n  - kind: prune_mine\n    amount: 0.4\n")
    assert main(["validate", str(path)]) == 0
    assert "prune_mine" in capsys.readouterr().out
    path.write_text("version: 1\nmodel: digits-mlp\nsteps:\n  - kind: prune_mine\n    amount: 1.5\n")
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "steps[0].amount" in err


def test_in_a_bundle_round_trip(mine, mlp, tmp_path):
    cfg = mine.MyPruneConfig(amount=0.6)
    recipe = compression_core.Recipe(model="digits-mlp", steps=[cfg])
    model = prune(mlp.model, cfg, mlp)
    save_bundle(tmp_path / "mine.bundle.pt", recipe, model)
    for source in (tmp_path / "mine.bundle.pt", bundle_bytes(recipe, model)):
        back_recipe, back = load_bundle(source)
        assert back_recipe.steps == [cfg]
        x = mlp.test.x[:32]
        with torch.no_grad():
            assert torch.equal(back(x), model(x))


def test_on_the_explore_page(mine):
    from streamlit.testing.v1 import AppTest

    label = mine.MyPruneConfig.ui.label
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception, at.exception
    key = "x_prune_digits-cnn"
    assert label in at.radio(key=key).options
    at.radio(key=key).set_value(label).run()
    slider = at.slider(key="x_prune_mine_amount")
    assert slider.min == 0.0 and slider.max < 1.0  # the bounds of the config's field (ge=0, lt=1)
    slider.set_value(0.3).run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["current_recipe"]["steps"][0] == {"kind": "prune_mine", "amount": 0.3}


# ---------------------------------------------------------------------------------------- the only list
def test_a_duplicate_kind_is_refused_in_one_line(mine):
    from typing import Literal

    from compression_core.technique import StepConfig

    class Impostor(StepConfig):
        kind: Literal["prune_mine"] = "prune_mine"

    with pytest.raises(CompressionError) as e:
        register(Impostor)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("register: kind 'prune_mine'") and "already registered" in msg
    assert Impostor not in registered_configs()
    register(mine.MyPruneConfig)(lambda model, cfg, ctx: model)  # the same class again replaces its handler
    assert [c for c in registered_configs() if c.model_fields["kind"].default == "prune_mine"] == [mine.MyPruneConfig]


def test_a_reloaded_module_replaces_its_technique(mine):
    old = mine.MyPruneConfig
    new = importlib.reload(mine).MyPruneConfig
    assert new is not old
    kinds = [c for c in registered_configs() if c.model_fields["kind"].default == "prune_mine"]
    assert kinds == [new]


def test_every_prune_and_quantize_technique_declares_its_family():
    for cls in registered_configs():
        kind = cls.model_fields["kind"].default
        assert cls.__dict__.get("ui") is not None, f"{cls.__name__} declares no ui = TechniqueUI(...)"
        if cls.__module__.startswith("compression_core.prune."):
            assert technique_ui(cls).family == "prune", kind
        if cls.__module__.startswith("compression_core.quantize."):
            assert technique_ui(cls).family == "quantize", kind
    quant = {c.model_fields["kind"].default for c in configs_of_family("quantize")}
    assert {"quantize_dynamic", "quantize_static", "quantize_qat", "quantize_half", "quantize_int4", "fake_quant",
            "quantize_embedding"} <= quant


def test_quantize_takes_every_quantize_config_and_prune_refuses_them():
    model = torch.nn.Sequential(torch.nn.Embedding(20, 8), torch.nn.Flatten(), torch.nn.Linear(16, 3))
    q = quantize(model, compression_core.EmbeddingInt8Config())  # refused while a hand-kept list left it out
    assert type(q[0]).__name__ == "Int8Embedding"
    ids = torch.randint(0, 20, (4, 2))
    assert q(ids).shape == (4, 3)
    for cfg in (compression_core.EmbeddingInt8Config(), compression_core.DynamicInt8Config(),
                compression_core.FineTuneConfig()):
        with pytest.raises(CompressionError, match="^kind: .* not a pruning one; give prune\\(\\) one of") as e:
            prune(model, cfg)
        assert "\n" not in str(e.value)
    with pytest.raises(CompressionError, match="^kind: .*not a quantization method"):
        quantize(model, compression_core.UnstructuredPruneConfig())
