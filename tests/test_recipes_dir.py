"""Every example recipe in recipes/ applies (as CI must) and does what its name promises."""

from pathlib import Path

import pytest

from compression_core.recipe import apply_recipe, load_recipe

RECIPES = sorted(p for p in (Path(__file__).parent.parent / "recipes").iterdir() if p.suffix in (".yaml", ".yml", ".json", ".md"))


def _apply(path):
    return apply_recipe(load_recipe(path), with_latency=False)


def test_there_are_recipes_for_every_technique_the_issue_names():
    names = {p.name for p in RECIPES}
    for required in ("deep-compression", "lottery-ticket", "static-int8", "int4", "vit-heads", "distill"):
        assert any(required in n for n in names), required


@pytest.mark.first_case_fast
@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_applies_with_sane_numbers(path):
    r = _apply(path)
    b, a = r.before, r.after
    name = path.name
    if name.startswith("minilm"):  # a real text task: the baseline is 82.7 %, one test line is 0.31 points
        assert b.accuracy - a.accuracy <= (0.015 if "int8" in name else 0.03), f"{name}: {b.accuracy} -> {a.accuracy}"
        assert "fidelity" in a.extra and a.extra["fidelity"] > 0.5
    elif name.startswith("tiny-lm"):  # a language model: perplexity, lower is better (benchmarks.language)
        assert a.metric == "perplexity", a.metric
        assert b.accuracy < a.accuracy <= 1.10 * b.accuracy, f"{name}: {b.accuracy} -> {a.accuracy}"
        assert a.size_bytes <= 0.30 * b.size_bytes and a.params == b.params  # the tied table counted once
        assert 0.1 < a.extra["token accuracy"] <= b.extra["token accuracy"] + 0.01
    else:
        assert a.accuracy > 0.85, f"{path.name}: accuracy {a.accuracy}"
    assert len(r.steps) == len(load_recipe(path).steps)
    if name == "minilm-int8.yaml":
        assert a.size_bytes <= 0.30 * b.size_bytes
    if name.startswith("deep-compression"):
        assert b.accuracy - a.accuracy <= 0.02 and a.size_bytes <= 0.3 * b.size_bytes
        assert a.nonzero_params <= 0.2 * a.params  # the 90% pruned weights stay pruned through int8
        assert a.sparse_size_bytes <= 0.1 * b.size_bytes  # int8 codes stored sparsely: Han et al.'s 10x+
    if name.startswith("static-int8"):
        assert b.accuracy - a.accuracy <= 0.01 and a.size_bytes <= 0.35 * b.size_bytes
    if name.startswith("int4"):
        assert b.accuracy - a.accuracy <= 0.02 and a.size_bytes <= 0.16 * b.size_bytes
    if name.startswith("vit-heads"):
        assert a.params < b.params and a.size_bytes < b.size_bytes
    if name.startswith("distill"):
        assert a.accuracy >= 0.95  # a re-initialised MLP taught by the CNN
    if name.startswith("lottery"):
        assert a.nonzero_params < 0.6 * a.params and a.sparse_size_bytes < a.size_bytes
