"""Length groups (compression_core.length_groups) and their use in the sensitivity sweep's Evaluator: a padded token
batch is evaluated as groups cut to their longest row only when the model ignores padding, with the same results."""

from __future__ import annotations

import itertools
import sys

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from compression_core import length_groups as LG
from compression_core.sensitivity import Evaluator, sensitivity
from compression_core.workload import Split, Workload


def _batch(lengths: list[int], width: int, vocab: int = 50, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), width), generator=g)
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids * mask, "attention_mask": mask}


def _cost(lengths: list[int], sizes: list[int]) -> int:
    s = sorted(lengths)
    out, start = 0, 0
    for z in sizes:
        out += z * s[start + z - 1]
        start += z
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=9), st.integers(1, 4))
def test_split_is_optimal_over_contiguous_runs(lengths, groups):
    sizes = LG._split(lengths, groups)
    assert sum(sizes) == len(lengths) and len(sizes) <= groups and all(z > 0 for z in sizes)
    best = min(_cost(lengths, [b - a for a, b in zip((0, *cuts), (*cuts, len(lengths)))])
               for k in range(groups) for cuts in itertools.combinations(range(1, len(lengths)), k))
    assert _cost(lengths, sizes) == best


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 16), min_size=2, max_size=40))
def test_groups_cover_every_row_once_and_cut_only_padding(lengths):
    x = _batch(lengths, 16)
    groups = LG.length_groups(x, min_saving=0.0)
    assert groups is not None
    rows = torch.cat([idx for idx, _ in groups]).sort().values
    assert torch.equal(rows, torch.arange(len(lengths)))
    for idx, gx in groups:
        keep = gx["attention_mask"].shape[1]
        assert torch.equal(gx["attention_mask"].sum(1), x["attention_mask"][idx].sum(1))  # no real token cut
        assert torch.equal(gx["input_ids"], x["input_ids"][idx][:, :keep])
    outs = [gx["input_ids"].float().sum(1, keepdim=True) for _, gx in groups]
    assert torch.equal(LG.assemble(groups, outs), x["input_ids"].float().sum(1, keepdim=True))


def test_not_grouped_when_not_a_right_padded_batch_or_no_saving():
    x = _batch([3, 8, 2, 8], 8)
    assert LG.length_groups({"input_ids": x["input_ids"]}) is None  # no mask
    assert LG.length_groups({**x, "attention_mask": x["attention_mask"].flip(1)}) is None  # left-padded
    assert LG.length_groups({**x, "scale": torch.tensor(1.0)}) is None  # something that is not per row
    assert LG.length_groups(_batch([8, 8, 7, 8], 8)) is None  # nothing worth cutting
    assert LG.length_groups(x["input_ids"]) is None  # a tensor input


class Encoder(nn.Module):
    """Token classifier with two transformer layers (held in a ModuleList: replayed blocks) and a pooled head; with
    ``masked`` pooling it ignores padding, without it the padded positions count (the mean of every position)."""

    def __init__(self, masked: bool, vocab: int = 50, d: int = 16, classes: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.masked = masked
        self.emb = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(d, 2, 32, dropout=0.0, batch_first=True)
                                    for _ in range(2))
        self.head = nn.Linear(d, classes)

    def forward(self, input_ids, attention_mask):
        h = self.emb(input_ids)
        pad = attention_mask == 0
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=pad)
        if not self.masked:
            return self.head(h.mean(1))
        w = attention_mask.unsqueeze(-1).float()
        return self.head((h * w).sum(1) / w.sum(1))


def _workload(masked: bool) -> Workload:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(2, 25, (90,), generator=g).tolist() + [32] * 6
    x = _batch(lengths, 32, seed=2)
    model = Encoder(masked).eval()
    with torch.no_grad():
        y = model(**x).argmax(-1)
    y[::4] = (y[::4] + 1) % 3  # not the model's own answer everywhere: accuracy below 1
    split = Split(x, y)
    return Workload(name="enc", model=model, train=split, calib=split, test=split)


@pytest.mark.parametrize("masked", [True, False])
def test_evaluator_groups_only_a_model_that_ignores_padding_and_agrees_with_the_whole_batch(masked, monkeypatch):
    wl = _workload(masked)
    ev = Evaluator(wl.model, wl.calib.x, wl.calib.y)
    assert (ev.parts is not None) is masked  # the all-position mean reads padding: evaluated whole
    grouped = sensitivity(wl.model, wl, "quantize", levels=(8, 4, 2), heads=False)
    monkeypatch.setattr(sys.modules["compression_core.sensitivity"], "length_groups", lambda x: None)  # the whole batch, as before
    whole = sensitivity(wl.model, wl, "quantize", levels=(8, 4, 2), heads=False)
    assert grouped.baseline_accuracy == whole.baseline_accuracy
    assert [c.points for c in grouped.layers] == [c.points for c in whole.layers]
