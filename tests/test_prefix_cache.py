"""compression_core.prefix_cache: replaying the blocks before a changed layer gives exactly a from-scratch forward,
and a sensitivity sweep with it gives the same curves as one without."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

import sample_models
from compression_core import inputs as I
from compression_core.prefix_cache import BlockPrefix
from compression_core.workload import resolve_workload

S = importlib.import_module("compression_core.sensitivity")  # the module (the package re-exports a function of that name)


class Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.attn = nn.Linear(d, d)
        self.ffn = nn.Sequential(nn.Linear(d, 2 * d), nn.ReLU(inplace=True), nn.Linear(2 * d, d))

    def forward(self, x):
        x = x + self.attn(x)
        return x + self.ffn(x)


class Net(nn.Module):
    """Not a Sequential: an embedding, a ModuleList of residual blocks, a head; an in-place ReLU inside."""

    def __init__(self, d: int = 16, depth: int = 4) -> None:
        super().__init__()
        self.inp = nn.Linear(8, d)
        self.blocks = nn.ModuleList(Block(d) for _ in range(depth))
        self.head = nn.Linear(d, 5)

    def forward(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = b(h)
        return self.head(h)


def _check_replay(model: nn.Module, x, layers: list[str]) -> None:
    bp = BlockPrefix(model, x)
    assert bp.outputs, "nothing recorded"
    for name in layers:
        w = model.get_submodule(name).weight
        orig = w.detach().clone()
        with torch.no_grad():
            w.mul_(0.3)
            scratch = I.call(model, x)
            with bp.skip_before(name):
                replayed = I.call(model, x)
            w.copy_(orig)
        assert torch.equal(scratch, replayed), name
    assert all("forward" not in m.__dict__ for m in model.modules())  # every patch undone
    with torch.no_grad():
        assert torch.equal(I.call(model, x), bp.reference)


def test_replay_equals_from_scratch_on_a_residual_net():
    torch.manual_seed(0)
    model = Net().eval()
    x = torch.randn(32, 8)
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    bp = BlockPrefix(model, x)
    assert bp.replayed("blocks.2.ffn.2") and "blocks.1" in bp.replayed("blocks.2.ffn.2")
    assert bp.replayed("inp") == []
    _check_replay(model, x, names)


@pytest.mark.slow
def test_sweep_with_replay_equals_sweep_without(monkeypatch):
    wl = sample_models.load("digits-vit")  # not a Sequential: blocks in a ModuleList
    fast = S.sensitivity(wl.model, wl, "prune", levels=(0.0, 0.5, 0.9), heads=False)
    monkeypatch.setattr(S, "BlockPrefix", lambda model, x: None)
    plain = S.sensitivity(wl.model, wl, "prune", levels=(0.0, 0.5, 0.9), heads=False)
    assert [c.points for c in fast.layers] == [c.points for c in plain.layers]
    assert fast.baseline_accuracy == plain.baseline_accuracy
    assert all(c.points[0][1] == fast.baseline_accuracy for c in fast.layers)  # 0 % is the baseline, exactly


@pytest.mark.slow
def test_replay_equals_from_scratch_on_minilm():
    wl = resolve_workload("minilm-topics")
    x = I.head(wl.calib.x, 24)
    _check_replay(wl.model, x, ["encoder.encoder.layer.0.attention.self.query",
                                "encoder.encoder.layer.2.output.dense", "encoder.encoder.layer.5.intermediate.dense",
                                "head"])


def test_cli_sensitivity_takes_levels(capsys):
    import json

    from compression_core.cli import main

    assert main(["sensitivity", "--model", "digits-cnn", "--levels", "0.5,0.9", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [p[0] for p in out["layers"][0]["points"]] == [0.5, 0.9]
    assert main(["sensitivity", "--model", "digits-cnn", "--levels", "half"]) == 2
    assert "--levels" in capsys.readouterr().err


def test_every_block_is_recorded_when_only_the_blocks_fit_the_budget():
    """A deep model whose fine children fill the budget early still has ALL its blocks recorded (blocks alone fit):
    a change in the last block then replays every block before it (a BERT-base's whole-test-set evaluation)."""
    class Block(nn.Module):  # a transformer layer's shape: weighted children, not itself a Sequential
        def __init__(self):
            super().__init__()
            self.up, self.down = nn.Linear(16, 64), nn.Linear(64, 16)

        def forward(self, h):
            return h + self.down(torch.relu(self.up(h)))

    torch.manual_seed(0)
    blocks = nn.Sequential(*[Block() for _ in range(8)])
    x = torch.randn(256, 16)
    per_block = 256 * 16 * 4  # bytes of one block's output; each block's fine children add 256 * 64 * 4 + that
    p = BlockPrefix(blocks, x, max_bytes=8 * per_block)
    assert not p.fine and set(p.outputs) == {str(i) for i in range(8)}
    assert p.replayed("7.up") == [str(i) for i in range(7)]
    assert p.bytes == 8 * per_block
