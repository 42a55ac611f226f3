"""Layer pruning: remove whole blocks (transformer blocks of the ViT; elsewhere any block whose input and output
shapes match), chosen by name or by importance = accuracy drop on the calibration split when the block is skipped.

Depth pruning in the spirit of Fan et al. 2020 ("Reducing Transformer Depth on Demand with Structured Dropout")
and Gromov et al. 2024 ("The Unreasonable Ineffectiveness of the Deeper Layers").
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..errors import CompressionError
from ..technique import StepConfig, StepContext, register
from .importance import skip_accuracy_drop


class LayerPruneConfig(StepConfig):
    """Remove the blocks ``names``, or the ``count`` blocks whose skipping costs the least calibration accuracy."""

    kind: Literal["prune_layers"] = "prune_layers"
    names: list[str] | None = None
    count: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_of(self) -> "LayerPruneConfig":
        if (self.names is None) == (self.count is None):
            raise ValueError("give exactly one of names (blocks to remove) or count (how many, by importance)")
        return self


def _has_weights(m: nn.Module) -> bool:
    return any(isinstance(x, (nn.Linear, nn.Conv2d)) for x in m.modules())


def removable_blocks(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Blocks that can be skipped: entries of a ModuleList (transformer blocks), or children of a Sequential that
    hold weights and map their input shape to the same output shape (found by one forward pass on ``example``)."""
    names = [f"{n}.{i}" if n else str(i) for n, m in model.named_modules() if isinstance(m, nn.ModuleList)
             for i, block in enumerate(m) if _has_weights(block)]
    shapes: dict[str, bool] = {}
    hooks = []
    for n, m in model.named_modules():
        if isinstance(m, nn.Sequential):
            for cname, child in m.named_children():
                full = f"{n}.{cname}" if n else cname
                if _has_weights(child):
                    def hook(mod, inp, out, full=full):
                        shapes[full] = isinstance(out, torch.Tensor) and tuple(inp[0].shape) == tuple(out.shape)
                    hooks.append(child.register_forward_hook(hook))
    if hooks:
        try:
            with torch.no_grad():
                model.eval()(example)
        finally:
            for h in hooks:
                h.remove()
    return names + [n for n, ok in shapes.items() if ok and n not in names]


def remove_block(model: nn.Module, name: str) -> nn.Module:
    """Remove block ``name`` in place: a ModuleList entry is dropped (later blocks renumber), a Sequential child
    is deleted (the other children keep their names)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.ModuleList):
        idx = int(child)
        kept = [b for i, b in enumerate(parent) if i != idx]
        grand, _, attr = parent_name.rpartition(".")
        setattr(model.get_submodule(grand) if grand else model, attr, nn.ModuleList(kept))
    else:
        delattr(parent, child)
    return model


def block_importance(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """{block: accuracy drop on (x, y) when the block is skipped}; lower = less important."""
    return skip_accuracy_drop(model, removable_blocks(model, x[:1]), x, y, remove_block)


def prune_layers(model: nn.Module, cfg: LayerPruneConfig, ctx: StepContext | None = None) -> nn.Module:
    """Apply ``cfg`` in place and return the model (the registered handler gets a copy)."""
    data = getattr(ctx, "data", None)
    field = "names" if cfg.names is not None else "count"
    example = _example(model, ctx, field)
    blocks = removable_blocks(model, example)
    if not blocks:
        raise CompressionError(f"{field}: this model has no removable blocks: only blocks whose input and output "
                               "shapes match (e.g. transformer blocks) can be removed")
    if cfg.names is not None:
        for n in cfg.names:
            if n not in blocks:
                raise CompressionError(f"names: {n!r} is not a removable block; removable: {', '.join(blocks)}")
        chosen = list(dict.fromkeys(cfg.names))
    else:
        if cfg.count >= len(blocks):
            raise CompressionError(f"count: must be < {len(blocks)} (the model has {len(blocks)} removable blocks: "
                                   f"{', '.join(blocks)}), got {cfg.count}")
        if data is None:
            raise CompressionError("count: choosing blocks by importance needs the calibration data")
        drops = skip_accuracy_drop(model, blocks, data.calib.x, data.calib.y, remove_block)
        chosen = sorted(blocks, key=lambda b: (drops[b], blocks.index(b)))[: cfg.count]
        if ctx is not None:
            ctx.report(0.5, "accuracy drop when skipped: " + ", ".join(f"{b} {d:+.4f}" for b, d in drops.items()))
    if len(chosen) >= len(blocks):
        raise CompressionError(f"names: cannot remove every block ({', '.join(blocks)}); keep at least one")
    for name in sorted(chosen, key=lambda b: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in b.split(".")], reverse=True):
        remove_block(model, name)  # from the last: removing a ModuleList entry renumbers the later ones
    if ctx is not None:
        ctx.report(1.0, f"removed {', '.join(chosen)}")
    return model


def _example(model: nn.Module, ctx: StepContext | None, field: str) -> torch.Tensor:
    data = getattr(ctx, "data", None)
    if data is not None:
        return data.calib.x[:1]
    info = getattr(ctx, "info", None)
    if info is not None:
        return torch.zeros(1, *info.input_shape)
    raise CompressionError(f"{field}: finding removable blocks needs the sample model's data or info")


@register(LayerPruneConfig)
def _layers_step(model: nn.Module, cfg: LayerPruneConfig, ctx: StepContext) -> nn.Module:
    return prune_layers(model, cfg, ctx)
