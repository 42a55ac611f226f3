"""tiny-lm: the GPT-2 decoder sample (trained here on chatterbot-corpus), its tokenizer, splits and perplexity metric;
the CLI's measure on it; every registered technique works on it or refuses in one line; the benchmark's JSON."""

from __future__ import annotations

import json
import math

import pytest
import torch

from compression_core import inputs as I
from compression_core.workload import registered_workloads, resolve_workload

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from sample_models import tiny_lm as lm  # noqa: E402  (after the importorskips)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """1 intra-op thread, as the benchmarks run: on 2 shared cores, 2 threads made the quantizer rows 6x slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def wl():
    return resolve_workload(lm.NAME)


def test_listed_cheaply_with_a_lower_is_better_metric():
    info = registered_workloads()[lm.NAME].info
    assert info["metric"] == "perplexity" and info["higher_is_better"] is False and info["percent"] is False
    assert info["baseline_metric"] == pytest.approx(lm.trained_metadata()["test_perplexity"])
    assert info["classifier"] == "lm_head" and "overfits" in info["task"]


def test_the_tokenizer_is_reproduced_by_training_it_again():
    shipped = lm.TOKENIZER_PATH.read_text(encoding="utf-8")
    again = lm.train_tokenizer(lm.texts()["train"]).to_str(pretty=True) + "\n"
    assert again == shipped  # deterministic BPE on the fixed train split
    tok = lm.tokenizer()
    assert tok.get_vocab_size() == lm.VOCAB and tok.token_to_id(lm.EOS) == 0
    assert tok.decode(tok.encode("Hello, how are you?").ids) == "Hello, how are you?"  # byte-level: lossless


def test_splits_are_fixed_and_disjoint_and_targets_are_the_next_tokens():
    t = lm.texts()
    sets = {k: {d.lower() for d in v} for k, v in t.items()}
    assert not sets["train"] & sets["test"] and not sets["calib"] & sets["test"] and not sets["train"] & sets["calib"]
    assert lm.data_fingerprint() == lm.trained_metadata()["data_fingerprint"]
    s = lm.splits()
    for name, split in s.items():
        assert split.x.shape == split.y.shape and split.x.shape[1] == lm.SEQ_LEN and split.x.dtype == torch.long
        assert torch.equal(split.x[:, 1:], split.y[:, :-1])  # y is x shifted by one token
        assert torch.equal(split.x[1:, 0], split.y[:-1, -1])  # windows continue the stream
        assert len(split) == lm.trained_metadata()[f"{name}_windows"]


@pytest.mark.slow  # loads transformers and the model (~5 s)
def test_perplexity_is_finite_above_one_and_far_below_an_untrained_models(wl):
    """An honest check that training did something: the same architecture with fresh weights scores near the
    vocabulary size (1,024), the trained one far lower."""
    ppl = wl.score(wl.model)
    assert math.isfinite(ppl) and 1.0 < ppl <= lm.MAX_PERPLEXITY
    assert ppl == pytest.approx(lm.trained_metadata()["test_perplexity"], rel=1e-4)
    untrained = wl.score(wl.fresh_model())
    assert untrained > 5 * ppl
    assert wl.metric.higher_is_better is False and wl.metric.percent is False


@pytest.mark.slow  # loads transformers and the model (~5 s)
def test_next_token_accuracy_and_generation(wl):
    acc = lm.next_token_accuracy(wl.model, wl)
    assert acc == pytest.approx(lm.trained_metadata()["test_next_token_accuracy"], abs=1e-4)
    assert 0.1 < acc < 1.0
    assert lm.next_token_accuracy(wl.model, wl, n=4) > 0  # the preview form the extra-metrics API calls
    text = lm.generate(wl.model, "What is AI?", max_new_tokens=12)
    assert isinstance(text, str) and text == lm.generate(wl.model, "What is AI?", max_new_tokens=12)
    assert lm.generate(wl.model, "Hi", max_new_tokens=8, temperature=0.8, seed=1) == \
        lm.generate(wl.model, "Hi", max_new_tokens=8, temperature=0.8, seed=1)


@pytest.mark.slow  # loads transformers and the model (~5 s)
def test_the_model_is_gpt2_with_conv1d_and_a_tied_head(wl):
    from transformers.pytorch_utils import Conv1D

    m = wl.model
    assert m.lm_head.weight is m.transformer.wte.weight
    assert sum(isinstance(x, Conv1D) for x in m.modules()) == 4 * lm.N_LAYER
    out = I.call(m, wl.test.x[:2])
    assert out.shape == (2, lm.SEQ_LEN, lm.VOCAB)


@pytest.mark.slow  # loads transformers and the model (~5 s)
def test_cli_measure_prints_perplexity(capsys):
    from compression_core.cli import main

    assert main(["measure", "--model", lm.NAME, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "perplexity" in json.dumps(out).lower()
    assert out["params"] == sum(p.numel() for p in lm.build().parameters())  # the tied head counted once


@pytest.mark.slow  # GPTQ calibration on the model (~10 s)
def test_the_int4_gptq_recipe_applies_through_the_cli(capsys):
    """recipes/tiny-lm-int4-gptq.yaml as a user runs it: exit 0, the file <= 0.30x fp32 (int8 embeddings with the
    tied head + int4 GPTQ), perplexity within +5 %, the tied table counted once."""
    from pathlib import Path

    from compression_core.cli import main

    recipe = Path(__file__).resolve().parent.parent / "recipes" / "tiny-lm-int4-gptq.yaml"
    assert main(["apply", str(recipe), "--json", "--no-latency"]) == 0
    out = json.loads(capsys.readouterr().out)
    b, a = out["before"], out["after"]
    assert a["metric"] == "perplexity" and a["accuracy"] <= 1.05 * b["accuracy"]
    assert a["size_bytes"] <= 0.30 * b["size_bytes"] and a["params"] == b["params"]


def _matrix_rows():
    """benchmarks.generality's rows whose check reads the metric (real and simulated quantization, bf16), here a
    lower-is-better one; the pruning and training rows run on the zoo's GPT-2 (the same Conv1D and tied head) in
    tests/test_zoo.py, and fp16 takes 30 s of slow CPU half precision."""
    from benchmarks.generality import variants

    return [v for v in variants() if v.check in ("smaller", "half", "simulated") and v.label != "quantize_half fp16"
            and v.kind != "quantize_qat"]


@pytest.mark.slow  # about 40 s for all rows on a loaded machine
def test_every_quantizer_works_on_tiny_lm_within_its_perplexity_bound(wl):
    from benchmarks.generality import WORKS, run_cell

    rows = _matrix_rows()
    assert len(rows) >= 7
    cells = [run_cell(v, lm.NAME, wl) for v in rows]
    bad = [f"{c.technique}: {c.status}: {c.detail}" for c in cells if c.status != WORKS]
    assert not bad, bad
