"""The recipe: schema, determinism, bundles, CLI apply/validate/schema and one-line errors."""

import json

import pytest
import yaml

from compression_core.bundle import load_bundle
from compression_core.cli import main
from compression_core.errors import CompressionError
from compression_core.recipe import apply_recipe, load_recipe, recipe_schema, recipe_to_yaml, step_kinds
from compression_core.technique import registered_configs

QUICK = """
version: 1
model: digits-mlp
seed: 3
steps:
  - kind: prune_unstructured
    amount: 0.7
    scope: global
  - kind: finetune
    epochs: 1
  - kind: quantize_dynamic
"""


def test_every_registered_technique_is_a_step_kind_and_in_the_schema():
    kinds = set(step_kinds())
    registered = {c.model_fields["kind"].default for c in registered_configs()}
    assert registered <= kinds
    for k in ("finetune", "distill", "prune_unstructured", "prune_structured", "shrink", "prune_layers",
              "lottery_ticket", "prune_threshold", "quantize_dynamic", "quantize_static", "quantize_qat",
              "quantize_int4", "fake_quant", "network_slimming", "fit_budget"):
        assert k in kinds
    schema = json.dumps(recipe_schema())
    assert all(f'"{k}"' in schema for k in kinds)


def test_same_recipe_twice_gives_identical_accuracy_and_size():
    a = apply_recipe(load_recipe(QUICK), with_latency=False)
    b = apply_recipe(load_recipe(QUICK), with_latency=False)
    assert a.after.accuracy == b.after.accuracy
    assert a.after.size_bytes == b.after.size_bytes
    assert a.after.nonzero_params == b.after.nonzero_params


def test_yaml_round_trip_keeps_the_recipe():
    r = load_recipe(QUICK)
    assert load_recipe(recipe_to_yaml(r)) == r


def test_apply_json_has_the_contract_keys_and_bundle_remeasures_the_same(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(QUICK)
    bundle = tmp_path / "model.bundle"
    assert main(["apply", str(recipe), "--json", "--save-model", str(bundle)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"recipe", "before", "after", "steps"} <= out.keys()
    for key in ("model", "params", "nonzero_params", "size_bytes", "latency_ms", "batch_size", "threads",
                "accuracy", "flops", "layers"):
        assert key in out["before"] and key in out["after"]
    assert [s["kind"] for s in out["steps"]] == ["prune_unstructured", "finetune", "quantize_dynamic"]
    assert all("seconds" in s for s in out["steps"])
    assert main(["measure", "--bundle", str(bundle), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["accuracy"] == out["after"]["accuracy"]
    assert again["size_bytes"] == out["after"]["size_bytes"]
    _, model = load_bundle(bundle)
    assert model is not None


def test_schema_and_validate(tmp_path, capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "steps" in json.dumps(schema)
    ok = tmp_path / "ok.yaml"
    ok.write_text(QUICK)
    assert main(["validate", str(ok)]) == 0


BAD = {
    "malformed yaml": ("version: 1\nmodel: [digits-mlp\n", "line"),
    "unknown kind": ("version: 1\nmodel: digits-mlp\nsteps:\n  - kind: prune_everything\n", "prune_everything"),
    "wrong type": ("version: 1\nmodel: digits-mlp\nsteps:\n  - kind: finetune\n    epochs: many\n", "steps[0].epochs"),
    "out of range": ("version: 1\nmodel: digits-mlp\nsteps:\n  - kind: finetune\n  - kind: prune_unstructured\n"
                     "    amount: 1.5\n", "steps[1].amount"),
    "unknown layer": ("version: 1\nmodel: digits-mlp\nsteps:\n  - kind: prune_unstructured\n    amount: 0.5\n"
                      "    targets: [fc9]\n", "fc9"),
    "unknown model": ("version: 1\nmodel: resnet\nsteps: []\n", "digits-cnn"),
    "wrong version": ("version: 7\nmodel: digits-mlp\nsteps: []\n", "version"),
    "not a mapping": ("- 1\n- 2\n", "recipe"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
@pytest.mark.parametrize("command", ["apply", "validate"])
def test_bad_recipes_are_one_line_exit_2_and_write_nothing(case, command, tmp_path, capsys):
    text, expected = BAD[case]
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    out = tmp_path / "never.bundle"
    argv = [command, str(recipe)] + (["--save-model", str(out)] if command == "apply" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    assert expected in err, err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.yaml"]


def test_out_of_range_message_names_the_field_path():
    with pytest.raises(CompressionError) as e:
        load_recipe(yaml.safe_load(BAD["out of range"][0]))
    assert str(e.value).startswith("steps[1].amount")
