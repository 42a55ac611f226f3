"""benchmarks.language: its goal verdicts read the rows the right way round (perplexity: lower is better), and a
quick run of the tiny-lm section prints one JSON object of the documented shape. No timing is asserted."""

from __future__ import annotations

import json

import pytest

from benchmarks import language


def _lm(ppl: dict[str, float], size_ratio: float = 0.17, b1: float = 0.5) -> dict:
    rows = [{"row": r, "metric": v} for r, v in ppl.items()]
    return {"rows": rows, "recipe": {"recipe": "tiny-lm-int4-gptq.yaml", "size": 17, "fp32_size": 100,
                                     "size_ratio": size_ratio, "metric": ppl["int4 gptq"]},
            "onnxruntime": {"b1_ratio": b1, "b1_ms": 1.0, "fp32_b1_ms": 2.0, "b32_ratio": 0.8, "b32_ms": 8.0,
                            "fp32_b32_ms": 10.0}}


GOOD = {"fp32": 100.0, "int4 rtn": 106.0, "int4 gptq": 103.0, "int4 awq": 104.0,
        "int3 rtn": 140.0, "int3 gptq": 116.0, "int3 awq": 125.0}


def test_goals_met_when_gptq_is_close_to_fp32_and_below_rtn():
    goals = language.tiny_lm_goals(_lm(GOOD))
    assert [g["met"] for g in goals] == [True, True, True, True]
    assert "+3.0 %" in goals[0]["measured"] and "0.40 of RTN" in goals[1]["measured"]


def test_goals_missed_read_the_lower_is_better_direction():
    worse = dict(GOOD, **{"int4 gptq": 108.0, "int4 awq": 107.0, "int3 gptq": 125.0, "int3 awq": 130.0})
    goals = language.tiny_lm_goals(_lm(worse, size_ratio=0.31, b1=1.2))
    assert [g["met"] for g in goals] == [False, False, False, False]
    # better than RTN but more than +5 %: still missed; within +5 % but above RTN: missed too
    assert language.tiny_lm_goals(_lm(dict(GOOD, **{"int4 rtn": 102.0})))[0]["met"] is False


def test_a_run_without_int3_rows_judges_the_other_goals():
    only4 = {k: v for k, v in GOOD.items() if not k.startswith("int3")}
    assert [g["goal"].split(":")[0] for g in language.tiny_lm_goals(_lm(only4))] == [
        "tiny-lm int4 g64", "tiny-lm int4 recipe (int8 embeddings + int4 GPTQ) file <= 0.30x fp32",
        "tiny-lm int4 as ORT MatMulNBits"]


def test_minilm_goals_compare_fidelity_and_int8_speed():
    m = {"rows": [{"row": "int4 rtn", "fidelity": 0.94}, {"row": "int4 gptq", "fidelity": 0.97},
                  {"row": "int4 awq", "fidelity": 0.975}],
         "int8": {"int8_dot": True, "rows": [{"row": "a", "b32_ratio": 0.35, "b32_ms": 35.0, "fp32_b32_ms": 100.0,
                                              "points": 0.5}]}}
    goals = language.minilm_goals(m)
    assert [g["met"] for g in goals] == [True, False]


@pytest.mark.slow  # loads tiny-lm, runs GPTQ / AWQ at two widths, exports to ONNX (~1 min)
def test_quick_tiny_lm_run_prints_one_json_object(capsys):
    import torch

    threads = torch.get_num_threads()
    try:
        assert language.main(["--json", "--quick", "--only", "tiny-lm", "--bits", "4"]) == 0
    finally:
        torch.set_num_threads(threads)  # the benchmark runs on 1 thread; later tests in this worker get theirs back
    out = json.loads(capsys.readouterr().out)
    assert out["benchmark"] == "language" and out["threads"] == 1 and "cpu" in out
    lm = out["tiny_lm"]
    assert lm["metric"] == "perplexity" and lm["higher_is_better"] is False
    rows = {r["row"] for r in lm["rows"]}
    assert rows == {"fp32"} | {f"int4 {m}" for m in ("rtn", "gptq", "awq")}
    assert all(r["metric"] > 1 and 0 < r["token accuracy"] < 1 for r in lm["rows"])
    assert lm["recipe"]["size_ratio"] < 1 and lm["onnxruntime"]["b1_ratio"] > 0
    assert len(out["goals"]) == 3 and all(set(g) == {"goal", "met", "measured"} for g in out["goals"])
    assert "minilm" not in out and "lowrank" not in out
