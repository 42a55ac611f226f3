"""Hypothesis over recipes (text and data), bundles (random, truncated, bit-flipped bytes) and CLI arguments:
always a result or ONE error line (CLI: exit 2 with one ``error:`` line), never a traceback.

The strategies and checks are the ones ``python -m benchmarks.fuzz`` runs at >= 1,000 cases; here a few dozen
each keep CI fast. A ContractViolation fails the test (hypothesis then shrinks it to a minimal example).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from benchmarks import fuzz

FAST = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    paths, base = fuzz.make_files(str(folder))
    return str(folder), paths, base


@FAST
@given(fuzz.recipe_texts())
def test_recipe_text_is_loaded_or_one_error_line(text):
    fuzz.check_recipe(text)


@FAST
@given(fuzz.recipe_dicts())
def test_recipe_data_is_loaded_or_one_error_line(data):
    fuzz.check_recipe(data)


def test_damaged_bundles_load_or_fail_in_one_line(files):
    folder, _, base = files
    assert fuzz.check_bundle(base, folder) == "ok"  # the undamaged bundle loads

    @FAST
    @given(fuzz.bundle_blobs(base))
    def case(blob):
        fuzz.check_bundle(blob, folder)

    case()


def test_cli_arguments_exit_0_or_2_with_one_line(files, monkeypatch):
    folder, paths, _ = files
    monkeypatch.chdir(folder)  # whatever a fuzzed command writes stays in the temporary folder

    @FAST
    @given(fuzz.cli_argvs(paths))
    def case(argv):
        fuzz.check_cli(argv)

    with fuzz.quick_latency():
        case()


def test_known_hostile_cli_inputs(files, monkeypatch):
    """Hand-picked cases the strategies may miss: each must be one error line, exit 2, nothing written."""
    folder, p, _ = files
    monkeypatch.chdir(folder)
    cases = [
        ["validate", p["evil.yaml"]], ["validate", p["empty.yaml"]], ["validate", p["notes.txt"]],
        ["validate", p["adir"]], ["apply", p["range.yaml"], "--save-model", p["out.bundle.pt"]],
        ["measure", "--bundle", p["module.bundle.pt"]], ["measure", "--bundle", p["trunc.bundle.pt"]],
        ["measure", "--bundle", p["random.bundle.pt"]], ["measure", "--model", "digits-mlp", "--threads", "0"],
        ["measure", "--batch-size", "99999999999999999999999", "--model", "digits-mlp"], ["export", p["adir"]],
        ["export", p["trunc.bundle.pt"], "--onnx", p["out.onnx"]], ["measure", "--model", "\x00"], [],
    ]
    for argv in cases:
        assert fuzz.check_cli(argv) == "error", argv
    assert not os.path.exists(p["out.bundle.pt"]) and not os.path.exists(p["out.onnx"])


def test_fuzz_benchmark_counts_cases_and_finds_a_planted_bug(monkeypatch):
    """The benchmark's runner counts every case and reports violations instead of stopping (planted bug)."""
    record = {"cases": 0, "ok": 0, "error": 0, "failures": []}

    def buggy(text):
        if "x" in text:
            raise fuzz.ContractViolation("planted")
        return "ok"

    from hypothesis import strategies as st

    fuzz._collect(buggy, st.text(alphabet="xyz", min_size=1, max_size=8), 30, record, seed=1)
    assert record["cases"] >= 20 and record["failures"] and record["ok"]


def test_hostile_inputs_are_one_line_each_and_memory_stays_bounded(files):
    """The alias bomb, 1 MB of nesting, huge node counts, giant scalars, single-line texts: each through
    ``load_recipe`` and ``validate FILE`` must be ONE error line, with resident memory growing by at most 100 MB over
    all of them. (Their time per case, <= 1 s, is measured by ``python -m benchmarks.fuzz``, not asserted here: it
    depends on the machine's load.)"""
    folder, _, _ = files
    r = fuzz.run_hostile(folder, budget_s=float("inf"))
    assert r["cases"] == 2 * len(fuzz.hostile_cases())
    assert not r["failures"], r["failures"]
    assert r["error"] == r["cases"]  # none of them is a valid recipe
    assert r["rss_growth_mb"] <= 100


def test_alias_bomb_is_the_342_byte_one():
    assert len(fuzz.ALIAS_BOMB) == 342 and fuzz.ALIAS_BOMB.count("*") == 72
