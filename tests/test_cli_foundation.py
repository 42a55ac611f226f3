import json
import subprocess
import sys

import pytest

import sample_models
from compression_core.cli import main

KEYS = {"model", "params", "nonzero_params", "size_bytes", "latency_ms", "batch_size", "threads", "accuracy",
        "flops", "layers"}


@pytest.mark.slow
def test_measure_json_via_subprocess_has_the_contract_keys():
    out = subprocess.run([sys.executable, "-m", "compression_core", "measure", "--model", "digits-cnn", "--json"],
                         capture_output=True, text=True, check=True)
    d = json.loads(out.stdout)
    assert KEYS <= d.keys()
    assert d["accuracy"] >= 0.97
    assert {"name", "type", "params", "nonzero", "sparsity"} <= d["layers"][0].keys()


@pytest.mark.parametrize("name", sample_models.MODEL_NAMES)
def test_measure_json_meets_each_threshold(name, capsys):
    assert main(["measure", "--model", name, "--json", "--batch-size", "2"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["accuracy"] >= sample_models.info(name).min_accuracy
    assert d["batch_size"] == 2 and d["threads"] == 1


def test_models_lists_every_model(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = [r["name"] for r in rows]
    assert names[: len(sample_models.MODEL_NAMES)] == list(sample_models.MODEL_NAMES)  # the samples first, in order
    assert all(r["baseline_accuracy"] > 0.9 for r in rows if r["name"] in sample_models.MODEL_NAMES)
    assert main(["models"]) == 0
    assert "digits-cnn" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["measure", "--model", "nope"],
    ["measure"],
    ["measure", "--model", "digits-cnn", "--batch-size", "0"],
    ["measure", "--model", "digits-cnn", "--batch-size", "x"],
    ["frobnicate"],
    [],
])
def test_bad_input_is_one_line_and_exit_2(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err


@pytest.mark.slow
def test_unknown_model_names_valid_ones():
    out = subprocess.run([sys.executable, "-m", "compression_core", "measure", "--model", "nope"],
                         capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "digits-cnn" in out.stderr
