"""Layer pruning: remove whole blocks (any block, found by tracing one forward pass, that holds weights and maps its
input to an output of the same shape: a transformer layer, a residual block, a squeeze-excite gate), chosen by name
or by importance = metric drop on the calibration split when the block is skipped.

Depth pruning in the spirit of Fan et al. 2020 ("Reducing Transformer Depth on Demand with Structured Dropout")
and Gromov et al. 2024 ("The Unreasonable Ineffectiveness of the Deeper Layers").
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from .. import inputs as I
from ..errors import CompressionError
from ..graph import example_inputs, run_hooked
from ..linear_like import is_linear_like
from ..technique import StepConfig, StepContext, register, TechniqueUI, clone_model
from .probes import skip_accuracy_drop


class LayerPruneConfig(StepConfig):
    """Remove the blocks ``names``, or the ``count`` blocks whose skipping costs the least calibration accuracy."""

    kind: Literal["prune_layers"] = "prune_layers"
    ui = TechniqueUI(family="prune", label="whole blocks (depth)", storage="shrunk", order=40)
    names: list[str] | None = None
    count: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _one_of(self) -> "LayerPruneConfig":
        if (self.names is None) == (self.count is None):
            raise ValueError("give exactly one of names (blocks to remove) or count (how many, by importance)")
        return self


_WEIGHTED = (nn.Linear, nn.modules.conv._ConvNd, nn.MultiheadAttention, nn.RNNBase, nn.Embedding)


def _has_weights(m: nn.Module) -> bool:
    return any(isinstance(x, _WEIGHTED) or is_linear_like(x) for x in m.modules())  # Conv1D: GPT-2's layers


def _first_tensor(x: Any) -> torch.Tensor | None:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    return None


@torch.no_grad()
def block_shapes(model: nn.Module, example: Any) -> dict[str, tuple[tuple, tuple, bool, int]]:
    """{module: (input shape, output shape, output is a plain tensor, calls)} from one traced forward pass, for the
    modules that hold weights and sit in a ModuleList, a Sequential or directly in the model."""
    parents = {}
    for pname, parent in model.named_modules():
        for cname, child in parent.named_children():
            full = f"{pname}.{cname}" if pname else cname
            if pname == "" or isinstance(parent, (nn.ModuleList, nn.Sequential)):
                parents[full] = parent
    seen: dict[str, list] = {}
    hooks = []
    for name, m in model.named_modules():
        if name not in parents or not _has_weights(m):
            continue

        def hook(mod, args, kwargs, out, name=name):
            x = args[0] if args else next(iter(kwargs.values()), None)
            y = _first_tensor(out)
            rec = seen.setdefault(name, [None, None, False, 0])
            rec[3] += 1
            if isinstance(x, torch.Tensor) and y is not None:
                rec[0], rec[1], rec[2] = tuple(x.shape), tuple(y.shape), isinstance(out, torch.Tensor)
        hooks.append(m.register_forward_hook(hook, with_kwargs=True))
    run_hooked(model, example, hooks)
    return {n: tuple(v) for n, v in seen.items()}


def removable_blocks(model: nn.Module, example: Any) -> list[str]:
    """Blocks that can be skipped, found by tracing one forward pass on ``example``: modules holding weights that
    run once and map their input to an output of the same shape, sitting in a ModuleList (dropped), a Sequential
    (deleted) or directly in the model (replaced by nn.Identity; they must return a plain tensor)."""
    out = []
    for name, (sin, sout, plain, calls) in block_shapes(model, example).items():
        parent_name = name.rpartition(".")[0]
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(parent, nn.ModuleList) and len(parent) < 2:
            continue  # the model's own loop may need at least one entry (nn.TransformerEncoder reads layers[0])
        if calls == 1 and sin is not None and sin == sout and (plain or isinstance(parent, nn.ModuleList)):
            out.append(name)
    return [b for b in out if _runs_without(model, b, example)]


@torch.no_grad()
def _runs_without(model: nn.Module, name: str, example: Any) -> bool:
    """Whether the model still runs with block ``name`` removed (tried on a copy)."""
    try:
        I.call(remove_block(clone_model(model), name).eval(), I.head(example, 1))
        return True
    except Exception:
        return False


def why_not_removable(model: nn.Module, example: Any, name: str) -> str:
    """Why block ``name`` cannot be removed, in a few words."""
    rec = block_shapes(model, example).get(name)
    if rec is None:
        return "it holds no weights, or is not a block of a ModuleList, a Sequential or the model"
    sin, sout, plain, calls = rec
    parent_name = name.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.ModuleList) and len(parent) < 2:
        return f"it is the only entry of {parent_name!r}"
    if calls != 1:
        return f"it runs {calls} times per forward pass"
    if sin != sout:
        return f"its output shape {sout} differs from its input shape {sin}"
    if not plain and not isinstance(parent, nn.ModuleList):
        return "it returns more than a tensor outside a ModuleList"
    return "the model no longer runs without it"


def remove_block(model: nn.Module, name: str) -> nn.Module:
    """Remove block ``name`` in place: a ModuleList entry is dropped (later blocks renumber), a Sequential child
    is deleted (the other children keep their names), any other block becomes nn.Identity."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(parent, nn.ModuleList):
        idx = int(child)
        kept = [b for i, b in enumerate(parent) if i != idx]
        grand, _, attr = parent_name.rpartition(".")
        setattr(model.get_submodule(grand) if grand else model, attr, nn.ModuleList(kept))
    elif isinstance(parent, nn.Sequential):
        delattr(parent, child)
    else:
        setattr(parent, child, nn.Identity())
    return model


def block_importance(model: nn.Module, x: Any, y: torch.Tensor) -> dict[str, float]:
    """{block: accuracy drop on (x, y) when the block is skipped}; lower = less important."""
    return skip_accuracy_drop(model, removable_blocks(model, I.head(x, 2)), x, y, remove_block)


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
                raise CompressionError(f"names: {n!r} is not a removable block ({why_not_removable(model, example, n)}"
                                       f"); removable: {', '.join(blocks)}")
        chosen = list(dict.fromkeys(cfg.names))
    else:
        lists = {b.rpartition(".")[0] for b in blocks if isinstance(
            model.get_submodule(b.rpartition(".")[0]) if b.rpartition(".")[0] else model, nn.ModuleList)}
        full = sum(1 for p in lists if sum(b.rpartition(".")[0] == p for b in blocks) == len(model.get_submodule(p)))
        limit = len(blocks) - full  # a ModuleList keeps at least one entry
        if cfg.count > limit:
            raise CompressionError(f"count: must be < {limit + 1} (the model has {len(blocks)} removable blocks: "
                                   f"{', '.join(blocks)}; each ModuleList keeps one), got {cfg.count}")
        if data is None:
            raise CompressionError("count: choosing blocks by importance needs the calibration data")
        drops = skip_accuracy_drop(model, blocks, data.calib.x, data.calib.y, remove_block)
        chosen = sorted(blocks, key=lambda b: (drops[b], blocks.index(b)))[: cfg.count]
        if ctx is not None:
            ctx.report(0.5, "accuracy drop when skipped: " + ", ".join(f"{b} {d:+.4f}" for b, d in drops.items()))
    lists: dict[str, int] = {}  # ModuleList -> entries chosen
    for c in chosen:
        parent = c.rpartition(".")[0]
        if isinstance(model.get_submodule(parent) if parent else model, nn.ModuleList):
            lists[parent] = lists.get(parent, 0) + 1
    for parent, k in lists.items():
        if k >= len(model.get_submodule(parent)):
            raise CompressionError(f"names: cannot remove every block of {parent!r} ({', '.join(blocks)}); keep at "
                                   "least one")
    chosen = [c for c in chosen if not any(c.startswith(o + ".") for o in chosen if o != c)]  # inside another
    for name in sorted(chosen, key=lambda b: [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in b.split(".")], reverse=True):
        remove_block(model, name)  # from the last: removing a ModuleList entry renumbers the later ones
    try:
        with torch.no_grad():
            I.call(model, example)
    except Exception as e:  # the model's own forward relies on the block (e.g. reads its attributes)
        msg = f"{type(e).__name__}: {e}".replace("\n", " ")[:160]
        raise CompressionError(f"{field}: the model no longer runs without {', '.join(chosen)} ({msg}); choose "
                               "other blocks") from None
    if ctx is not None:
        ctx.report(1.0, f"removed {', '.join(chosen)}")
    return model


def _example(model: nn.Module, ctx: StepContext | None, field: str) -> Any:
    try:
        return example_inputs(ctx, field, n=2)
    except CompressionError:
        raise CompressionError(f"{field}: finding removable blocks traces the model on example inputs; pass the "
                               "workload") from None


@register(LayerPruneConfig)
def _layers_step(model: nn.Module, cfg: LayerPruneConfig, ctx: StepContext) -> nn.Module:
    return prune_layers(model, cfg, ctx)
