"""Lottery tickets (Frankle & Carbin 2019, "The Lottery Ticket Hypothesis"): iterative magnitude pruning with
rewinding. Train, prune ``rate`` of the remaining weights of each layer (or globally), reset the survivors to their
initial values (or to their values after ``k`` training iterations: late rewinding, Frankle et al. 2020 "Linear
Mode Connectivity and the Lottery Ticket Hypothesis"), and train again, for ``rounds`` rounds.

The control is the same mask with freshly drawn random weights (``reinit="random"``). The sample models' initial
weights are reproducible: ``workload.fresh_model(seed)`` (the workload's ``build`` or ``reset_parameters`` under a fixed seed) (seed 0 is the
exact initialisation the shipped weights were trained from).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import CompressionError
from ..technique import StepConfig, StepContext, clone_model, register, TechniqueUI
from ..train import FineTuneConfig, fine_tune
from .magnitude_cut import CutL1Unstructured
from .unstructured import select_layers
from ..measure import evaluate


class LotteryTicketConfig(StepConfig):
    """Iterative magnitude pruning: ``rounds`` rounds of train -> prune ``rate`` of what is left -> rewind."""

    kind: Literal["lottery_ticket"] = "lottery_ticket"
    ui = TechniqueUI(family="prune", label="lottery ticket (train, prune, rewind)", trains=True,
                     layer_types=("Linear", "Conv1D", "Conv2d"), storage="sparse", order=50)
    rate: float = Field(default=0.2, gt=0, lt=1)
    rounds: int = Field(default=5, ge=1, le=30)
    rewind: Literal["init"] | int = "init"
    epochs: int = Field(default=3, ge=1, le=100)
    lr: float = Field(default=2e-3, gt=0, le=1.0)
    batch_size: int = Field(default=64, ge=1, le=4096)
    weight_decay: float = Field(default=1e-4, ge=0, le=1.0)
    scope: Literal["layer", "global"] = "layer"
    reinit: Literal["original", "random"] = "original"
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    include_classifier: bool = False


@dataclass
class RoundStats:
    """One round: the fraction of the targeted weights left, the ticket's test accuracy after training and, when
    asked, the accuracy of the same mask trained from a random re-initialisation."""

    round: int
    weights_left: float
    accuracy: float
    random_accuracy: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _initial_model(model: nn.Module, ctx: StepContext, offset: int = 0) -> nn.Module:
    """Freshly initialised weights of the workload's architecture (``offset`` draws another initialisation)."""
    wl = ctx.data
    if wl is None or not hasattr(wl, "fresh_model"):
        raise CompressionError("rewind: the lottery ticket needs a workload to rebuild its initial weights")
    return wl.fresh_model(ctx.seed + offset)


def _load_weights(model: nn.Module, source: dict[str, torch.Tensor], layers: list[str]) -> None:
    """Copy the plain ``source`` state into ``model`` (masked layers get it in ``weight_orig``), keeping masks."""
    with torch.no_grad():
        for key, value in source.items():
            owner, _, pname = key.rpartition(".")
            module = model.get_submodule(owner) if owner else model
            target = getattr(module, pname + "_orig", None)
            target = target if target is not None else getattr(module, pname)
            target.copy_(value)
            if hasattr(module, pname + "_mask"):
                target.mul_(getattr(module, pname + "_mask"))


def _weights_left(model: nn.Module, layers: list[str]) -> float:
    masks = [model.get_submodule(n).weight_mask for n in layers]
    return float(sum(m.sum() for m in masks) / sum(m.numel() for m in masks))


def lottery_ticket(model: nn.Module, cfg: LotteryTicketConfig, ctx: StepContext,
                   control: bool | None = None) -> tuple[nn.Module, list[RoundStats]]:
    """Run iterative magnitude pruning on a copy of ``model``; return (the ticket, one RoundStats per round).

    Round 0 trains the dense network from the rewind point (the reference); round r trains the network with
    ``(1 - rate)^r`` of the targeted weights left. ``control`` (default: ``reinit == "random"``) also trains each
    round's mask from a random re-initialisation. With ``reinit="random"`` the returned model is that control.
    """
    model = clone_model(model)
    layers = select_layers(model, cfg, ctx)
    for name in layers:  # masks from the start, so every round has the same structure
        if not hasattr(model.get_submodule(name), "weight_mask"):
            torch_prune.identity(model.get_submodule(name), "weight")
    if ctx.replay:  # structure only: masks on the same layers; the saved state_dict is loaded afterwards
        for _ in range(cfg.rounds):
            _prune_round(model, layers, cfg)
        return model, []
    control = bool(control) or cfg.reinit == "random"
    data = ctx.data
    if data is None:
        raise CompressionError("epochs: the lottery ticket trains every round, so it needs a workload")
    data.needs("train", "the lottery ticket (it trains every round)")
    tune = FineTuneConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                          seed=ctx.seed)
    init = _initial_model(model, ctx).state_dict()
    _load_weights(model, init, layers)
    rewind_state = init
    snapshot: dict = {}
    if cfg.rewind != "init":
        k = int(cfg.rewind)
        steps = cfg.epochs * -(-len(data.train) // cfg.batch_size)
        if k > steps:
            raise CompressionError(f"rewind: iteration {k} is past the {steps} iterations of one round; use 0..{steps}")
        count = [0]

        def after_step(m: nn.Module) -> None:
            count[0] += 1
            if count[0] == k:
                snapshot.update({kk: v.detach().clone() for kk, v in _plain_state(m).items()})
        if k == 0:
            snapshot.update(init)
    else:
        after_step = None
    rounds: list[RoundStats] = []
    trained = None
    for r in range(cfg.rounds + 1):
        if r > 0:
            _prune_round(trained, layers, cfg)  # prune the trained weights by magnitude
            model = clone_model(trained)
            _load_weights(model, rewind_state, layers)  # rewind the survivors
        trained = fine_tune(model, data.train.x, data.train.y, tune, after_step=after_step if r == 0 else None)
        if r == 0 and cfg.rewind != "init":
            rewind_state = dict(snapshot)
        acc = evaluate(trained, data)
        rand_acc = None
        if control:
            ctrl = clone_model(trained)
            _load_weights(ctrl, _initial_model(model, ctx, offset=1000 + r).state_dict(), layers)
            ctrl = fine_tune(ctrl, data.train.x, data.train.y, tune)
            rand_acc = evaluate(ctrl, data)
        stats = RoundStats(r, _weights_left(trained, layers), acc, rand_acc)
        rounds.append(stats)
        ctx.report((r + 1) / (cfg.rounds + 1), f"round {r}: {stats.weights_left:.1%} of weights left, accuracy "
                   f"{acc:.4f}" + (f", random re-init {rand_acc:.4f}" if rand_acc is not None else ""))
    return (ctrl if cfg.reinit == "random" else trained), rounds


def _plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state with ``*_orig`` renamed to the parameter's name and masks dropped (unmasked values)."""
    out = {}
    for key, value in model.state_dict().items():
        if key.endswith("_mask"):
            continue
        out[key[: -len("_orig")] if key.endswith("_orig") else key] = value
    return out


def _prune_round(model: nn.Module, layers: list[str], cfg: LotteryTicketConfig) -> None:
    """Prune ``rate`` of the still-unpruned weights, per layer or globally (torch.nn.utils.prune L1)."""
    if cfg.scope == "layer":
        for name in layers:
            CutL1Unstructured.apply(model.get_submodule(name), "weight", amount=cfg.rate)
    else:
        params = [(model.get_submodule(n), "weight") for n in layers]
        torch_prune.global_unstructured(params, pruning_method=CutL1Unstructured, amount=cfg.rate)


@register(LotteryTicketConfig)
def _lottery_step(model: nn.Module, cfg: LotteryTicketConfig, ctx: StepContext) -> nn.Module:
    ticket, _ = lottery_ticket(model, cfg, ctx)
    return ticket
