"""Fine-tuning loop shared by sample-model training and every technique that trains (QAT, distillation,
fine-tuning after pruning). Deterministic for a given seed; keeps pruning masks intact.
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from . import inputs as I
from .technique import ProgressFn, clone_model, StepConfig, StepContext, register, TechniqueUI

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def per_position(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence outputs (B, T, classes) with targets (B, T) (a language model's next-token logits) as (B*T, classes)
    and (B*T,), what cross-entropy takes; (B, classes) outputs pass unchanged."""
    if logits.dim() > 2 and tuple(y.shape) == tuple(logits.shape[:-1]):
        return logits.reshape(-1, logits.shape[-1]), y.reshape(-1)  # (B*T, classes), (B*T,)
    return logits, y


class FineTuneConfig(StepConfig):
    """Train on the train split with AdamW and a cosine learning-rate schedule."""

    kind: Literal["finetune"] = "finetune"
    ui = TechniqueUI(family="train", label="fine-tune on the labels", trains=True, order=10)
    epochs: int = Field(default=3, ge=0, le=500)
    lr: float = Field(default=1e-3, gt=0, le=1.0)
    batch_size: int = Field(default=64, ge=1, le=4096)
    weight_decay: float = Field(default=0.0, ge=0, le=1.0)
    seed: int = Field(default=0, ge=0)


def _masks(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, mask) pairs of torch.nn.utils.prune reparametrisations (``<name>_orig`` * ``<name>_mask``)."""
    pairs = []
    for module in model.modules():
        buffers = dict(module.named_buffers(recurse=False))
        for pname, p in module.named_parameters(recurse=False):
            if pname.endswith("_orig") and pname[: -len("_orig")] + "_mask" in buffers:
                pairs.append((p, buffers[pname[: -len("_orig")] + "_mask"]))
    return pairs


def fine_tune(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: FineTuneConfig,
    progress: ProgressFn | None = None,
    loss_fn: LossFn | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
) -> nn.Module:
    """Return a trained copy of ``model``; the input is not modified.

    ``loss_fn(logits, x, y)`` replaces cross-entropy (distillation, penalties); ``after_step(model)`` runs after
    every optimiser step. Pruned weights stay zero: torch.nn.utils.prune masks multiply the forward weight, and
    the hidden ``*_orig`` values under a zero mask are re-zeroed after each step so weight decay cannot revive them.
    """
    model = clone_model(model)
    if cfg.epochs == 0 or len(y) == 0:
        return model.eval()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = int(y.shape[0])
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    masks = _masks(model)
    step = 0
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        running = 0.0
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            xb, yb = I.take(x, idx), y[idx]
            logits = I.call(model, xb)
            loss = loss_fn(logits, xb, yb) if loss_fn is not None else F.cross_entropy(*per_position(logits, yb))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if masks:
                with torch.no_grad():
                    for p, m in masks:
                        p.mul_(m)
            if after_step is not None:
                after_step(model)
            running += float(loss.detach())
            step += 1
        if progress is not None:
            progress((epoch + 1) / cfg.epochs, f"epoch {epoch + 1}/{cfg.epochs} loss {running / steps_per_epoch:.4f}")
    return model.eval()


@register(FineTuneConfig)
def _finetune_step(model: nn.Module, cfg: FineTuneConfig, ctx: StepContext) -> nn.Module:
    if ctx.replay:  # validation and bundle loading rebuild structure only: training never changes it
        return model
    train = ctx.data.needs("train", "finetune")  # type: ignore[attr-defined]
    return fine_tune(model, train.x, train.y, cfg, progress=ctx.report)
