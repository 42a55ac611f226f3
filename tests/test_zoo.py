"""Generality on foreign architectures (tests/zoo.py): every registered technique x every zoo model gives the outcome
the README's matrix pins for that cell: works (a property of its result checked) or refuses in one line naming the
field or layer; never another exception or a silently wrong number. The fast run checks each technique on the first
model it works on; the rest of the matrix is marked slow. Plus regression tests for the silent errors of issue 14 item 8 that show from outside:
parameter counts of modules that own weights and have children, integer inputs never cast to a float dtype, and
``measure --model tests/zoo.py:<fn> --json`` through the CLI.

The cell logic lives in ``benchmarks.generality`` so the README's matrix and these tests are the same check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from benchmarks.generality import ERROR, NEEDS_ARGUMENTS, REFUSED, VARIANTS, WORKS, is_named_refusal, run_cell, variants
from compression_core import CompressionError, Workload, measure, predict, resolve_workload
from compression_core.quantize import HalfPrecisionConfig, quantize
from compression_core.technique import registered_configs

ROOT = Path(__file__).resolve().parent.parent
MODELS = list(zoo.ZOO)



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread, as the benchmark runs: on 2 shared cores a second thread makes training 10-40x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def readme_matrix() -> dict[tuple[str, str], str]:
    """The README's generality table, (row label, zoo model) -> "works" | "refused" | "error": the pinned expected
    outcome of every cell (a technique that starts refusing, or starts working, fails until the table changes)."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Generality"):]
    lines = [ln for ln in section.splitlines() if ln.startswith("| technique |")][:1]
    assert lines, "README.md: the generality table (a row starting '| technique |') is missing"
    start = section.splitlines().index(lines[0])
    rows = []
    for ln in section.splitlines()[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip().strip("*") for c in ln.strip().strip("|").split("|")])
    header, body = rows[0][1:], rows[2:]
    return {(r[0], m): v for r in body for m, v in zip(header, r[1:])}


MATRIX = readme_matrix()


def _fast_column(label: str) -> str | None:
    """The model on which a technique runs in the fast test set: the first zoo model the README says it works on
    (so the fast run still exercises every registered technique once), else the first model."""
    works = [m for m in MODELS if MATRIX.get((label, m)) == WORKS]
    return works[0] if works else (MODELS[0] if MODELS else None)


def _cases():
    for v in variants():
        fast = _fast_column(v.label)
        for name in MODELS:
            marks = () if name == fast else (pytest.mark.slow,)
            yield pytest.param(v, name, id=f"{v.label.replace(' ', '_')}-{name}", marks=marks)


def test_the_readme_matrix_has_every_row_and_model_and_no_bug():
    """One cell per (registered technique row, zoo model), each works or refused (an error is a bug: fix it)."""
    assert {lbl for lbl, _ in MATRIX} == {v.label for v in variants()}, "README generality rows != variants()"
    assert {m for _, m in MATRIX} == set(MODELS), "README generality columns != the zoo"
    assert set(MATRIX.values()) <= {WORKS, REFUSED}, "README generality table lists an error: fix the bug"


def test_the_zoo_has_the_architectures_the_issue_names():
    assert len(MODELS) >= 10
    wanted = {"resnet", "mobilenet", "flatten_cnn", "densenet", "same_pad_cnn", "se_cnn", "scaled_mlp",
              "row_transformer", "gru", "token_transformer", "dict_attention"}
    assert wanted <= set(MODELS)
    kinds = {type(m).__name__ for name in MODELS for m in zoo.ZOO[name]().model.modules()}
    for needed in ("GRU", "TransformerEncoder", "TransformerEncoderLayer", "MultiheadAttention", "Embedding",
                   "Conv2dSame"):
        assert needed in kinds
    assert any(m.groups > 1 for m in zoo.mobilenet().model.modules() if isinstance(m, nn.Conv2d))


def test_every_registered_technique_has_a_row():
    kinds = {c.model_fields["kind"].default for c in registered_configs()}
    rows = {v.kind for v in variants()}
    assert kinds - set(NEEDS_ARGUMENTS) == rows
    assert set(VARIANTS) <= kinds, "a VARIANTS entry names a technique that is no longer registered"


@pytest.mark.parametrize("name", MODELS)
def test_zoo_models_are_trained_and_deterministic(name):
    wl = zoo.ZOO[name]()
    assert isinstance(wl, Workload)
    assert wl.score(wl.model) >= (0.85 if name != "token_transformer" else 0.8)


@pytest.mark.parametrize("variant, name", list(_cases()))
def test_technique_gives_the_outcome_the_readme_pins(variant, name):
    cell = run_cell(variant, name, zoo.ZOO[name]())
    expected = MATRIX.get((variant.label, name))
    assert cell.status == expected, (f"{variant.label} x {name}: README pins {expected!r}, got {cell.status!r}: "
                                     f"{cell.detail} (if the change is right, update the README's matrix)")
    if cell.status == REFUSED:
        assert is_named_refusal(cell.detail)


def test_a_refusal_must_name_a_field_or_layer():
    cfg = HalfPrecisionConfig()
    model = zoo.resnet().model
    assert is_named_refusal("dtype: fp8 is not offered; choose fp16 or bf16", cfg, model)
    assert is_named_refusal("layer1.conv1: its outputs feed a residual add", cfg, model)
    assert not is_named_refusal("something went wrong", cfg, model)
    assert not is_named_refusal("oops: two\nlines", cfg, model)
    assert not is_named_refusal("the model: is odd", cfg, model)


def test_an_error_cell_is_reported_as_error():
    """The classifier of cells itself: an exception that is not a CompressionError is an error, not a refusal."""
    from typing import Literal

    from benchmarks.generality import Variant
    from compression_core.technique import StepConfig

    class BrokenConfig(StepConfig):
        kind: Literal["zoo_test_broken"] = "zoo_test_broken"

    def broken(model, cfg, ctx):
        raise IndexError("index 0 is out of range")

    import compression_core.technique as T

    T._HANDLERS[BrokenConfig] = broken
    try:
        cell = run_cell(Variant("broken", "zoo_test_broken", (BrokenConfig(),), "generic"), "gru", zoo.gru())
        assert cell.status == ERROR and "IndexError" in cell.detail
    finally:
        del T._HANDLERS[BrokenConfig]


# ----------------------------------------------------------------------------- issue 14 item 8: measurable from outside
@pytest.mark.parametrize("name", MODELS)
def test_measure_counts_parameters_of_modules_with_weights_and_children(name):
    wl = zoo.ZOO[name]()
    stats = measure(wl.model, wl, with_latency=False)
    true = sum(p.numel() for p in wl.model.parameters())
    assert stats.params == true
    assert stats.nonzero_params == sum(int((p != 0).sum()) for p in wl.model.parameters())
    assert stats.metric == wl.metric.name


def test_the_zoo_has_modules_that_own_weights_and_have_children():
    owners = {name: [n for n, m in zoo.ZOO[name]().model.named_modules()
                     if list(m.children()) and list(m.parameters(recurse=False))]
              for name in ("scaled_mlp", "row_transformer", "token_transformer")}
    assert owners["scaled_mlp"] == ["blocks.0", "blocks.1"]
    assert "0" in owners["row_transformer"] and "1.self_attn" in owners["row_transformer"]
    assert "" in owners["token_transformer"]  # the root owns the position embedding


class DtypeProbe(nn.Module):
    """Records the dtype of every tensor it is called with."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(zoo.VOCAB, 4)
        self.fc = nn.Linear(4, 2)
        self.seen: list[torch.dtype] = []

    def forward(self, input_ids, attention_mask=None):
        self.seen.append(input_ids.dtype)
        if attention_mask is not None:
            self.seen.append(attention_mask.dtype)
        return self.fc(self.embed(input_ids).mean(1))


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("as_dict", [False, True])
def test_integer_inputs_are_never_cast_to_a_float_dtype(dtype, as_dict):
    ids = torch.randint(2049, zoo.VOCAB, (8, zoo.SEQ), generator=torch.Generator().manual_seed(0))
    x = {"input_ids": ids, "attention_mask": torch.ones_like(ids)} if as_dict else ids
    wl = Workload(name="probe", model=DtypeProbe(), test=(x, torch.zeros(8, dtype=torch.long)))
    half = quantize(wl.model, HalfPrecisionConfig(dtype=dtype), wl)
    half.seen.clear()
    predict(half, x)
    measure(half, wl, with_latency=False)
    assert half.seen and set(half.seen) == {torch.long}


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("name", ["token_transformer", "dict_attention"])
def test_token_models_in_half_precision_predict_like_fp32(name, dtype):
    """Token ids above 2048 (fp16) / 256 (bf16) are not representable in the half dtype: were they cast, a large
    share of the predictions would change (checked below, so the bound means something)."""
    wl = zoo.ZOO[name]()
    x = wl.test.x
    ids = x["input_ids"] if isinstance(x, dict) else x
    assert int(ids.max()) > 4096
    fp32 = predict(wl.model, x).argmax(-1)
    try:
        half = quantize(wl.model, HalfPrecisionConfig(dtype=dtype), wl)
    except CompressionError as e:
        assert is_named_refusal(str(e))
        return
    agree = float((predict(half, x).argmax(-1) == fp32).float().mean())
    assert agree >= 0.97, f"{dtype}: only {agree:.3f} of the predictions kept"
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    corrupt = ids.to(torch_dtype).long().clamp(max=zoo.VOCAB - 1)  # what a cast would feed the embedding
    corrupted_x = {**x, "input_ids": corrupt} if isinstance(x, dict) else corrupt
    corrupted = float((predict(wl.model, corrupted_x).argmax(-1) == fp32).float().mean())
    assert corrupted < agree - 0.05, f"casting the ids would keep {corrupted:.3f}: the test could not see it"


# -------------------------------------------------------------------------------------------------------- CLI
_CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}

# Runs in a fresh interpreter: the CLI's ``main`` on ``measure --model tests/zoo.py:<name> --json`` for each name given
# on its command line, printing one JSON object {name: [exit status, stdout, stderr]} (one interpreter start and one
# import of torch for all of them instead of one per model).
_CLI_LOOP = """
import contextlib, io, json, sys
from compression_core.cli import main
results = {}
for name in sys.argv[1:]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["measure", "--model", f"tests/zoo.py:{name}", "--json"])
    results[name] = [rc, out.getvalue(), err.getvalue()]
print(json.dumps(results))
"""


def _measure_cli(name: str) -> dict[str, tuple[int, str, str]]:
    """``python -m compression_core measure --model tests/zoo.py:<name> --json`` in a subprocess."""
    p = subprocess.run([sys.executable, "-m", "compression_core", "measure", "--model", f"tests/zoo.py:{name}",
                        "--json"], cwd=ROOT, capture_output=True, text=True, timeout=600, env=_CLI_ENV)
    return {name: (p.returncode, p.stdout, p.stderr)}


def _measure_cli_loop(names: list[str]) -> dict[str, tuple[int, str, str]]:
    """The CLI's ``main`` on each of ``names`` in one subprocess (see _CLI_LOOP)."""
    p = subprocess.run([sys.executable, "-c", _CLI_LOOP, *names], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env=_CLI_ENV)
    assert p.returncode == 0, p.stderr[-2000:]
    return {name: tuple(r) for name, r in json.loads(p.stdout.strip().splitlines()[-1]).items()}


@pytest.fixture(scope="module")
def cli_results():
    """``measure --json`` of every zoo model from the command line in fresh processes (each trains its model on
    import, or loads the run's cached weights): the first through ``python -m compression_core``, the others through
    the CLI's ``main`` in one second subprocess, both at once."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(_measure_cli, MODELS[0])
        rest = pool.submit(_measure_cli_loop, MODELS[1:])
        return {**first.result(), **rest.result()}


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_cli_measure_reports_true_params_and_the_workloads_metric(name, cli_results):
    rc, out, err = cli_results[name]
    assert rc == 0, err[-2000:]
    stats = json.loads(out)
    wl = zoo.ZOO[name]()
    assert stats["params"] == sum(p.numel() for p in wl.model.parameters())
    assert stats["metric"] == wl.metric.name
    assert abs(stats["accuracy"] - wl.score(wl.model)) <= 1.0 / len(wl.test) + 1e-9


def test_zoo_functions_are_workload_references():
    wl = resolve_workload(f"{ROOT / 'tests' / 'zoo.py'}:gru")
    assert wl.name == "zoo-gru" and wl.metric.name == "macro recall"


@pytest.mark.slow
def test_the_example_workload_file_is_short_trains_once_and_reloads_the_same_weights(tmp_path):
    src = ROOT / "examples" / "my_workload.py"
    assert len(src.read_text().splitlines()) <= 30  # the README's "Bring your own model" promise
    (tmp_path / "my_workload.py").write_text(src.read_text())
    first = resolve_workload(f"{tmp_path / 'my_workload.py'}:workload", cache=False)
    assert (tmp_path / "my_workload.pt").is_file()
    assert first.score(first.model) >= 0.95
    again = resolve_workload(f"{tmp_path / 'my_workload.py'}:workload", cache=False)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values()))
    stats = measure(again.model, again, with_latency=False)
    assert stats.params == sum(p.numel() for p in again.model.parameters())
