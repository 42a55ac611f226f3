"""`measure`'s layer table: the name column is sized from the names (GPT-2's ``transformer.h.0.attn.c_attn`` does
not run into the type column), and a line stays within 120 characters by eliding the middle of a longer name."""

from __future__ import annotations

from compression_core.cli import LINE_WIDTH, render_stats
from compression_core.measure import LayerStats, ModelStats


def _stats_with(names: list[str]) -> ModelStats:
    layers = [LayerStats(name=n, type="Conv1D", params=49_536, nonzero=49_536, sparsity=0.0, dtype="float32", bits=32,
                         simulated=True) for n in names]
    return ModelStats(model="m", params=49_536 * len(names), nonzero_params=49_536 * len(names), size_bytes=1000,
                      latency_ms=None, batch_size=8, threads=1, accuracy=0.5, flops=1, nonzero_flops=1,
                      layers=layers, peak_ram_bytes=2000, peak_ram_bytes_b1=1000)


def _table(text: str) -> list[str]:
    lines = text.splitlines()
    return lines[next(i for i, ln in enumerate(lines) if ln.startswith("layer")):]


def test_gpt2_names_get_their_own_column():
    names = ["transformer.h.0.attn.c_attn", "transformer.h.10.mlp.c_proj", "lm_head"]
    table = _table(render_stats(_stats_with(names)))
    type_at = table[0].index("type")
    for name, line in zip(names, table[1:]):
        assert line.startswith(name + " ") and line[type_at:].startswith("Conv1D"), line
        assert line[:type_at].rstrip() == name  # at least one space between the name and its type


def test_a_very_long_name_loses_its_middle_and_lines_stay_within_the_width():
    long = "encoder.layer." + "very_long_block_name." * 8 + "attention.output.dense"
    table = _table(render_stats(_stats_with([long, "fc"])))
    assert all(len(line) <= LINE_WIDTH for line in table)
    row = table[1]
    assert row.startswith("encoder.layer.") and "..." in row and "output.dense " in row and "Conv1D" in row
