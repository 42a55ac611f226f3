"""Helpers shared by the pruning techniques: the classifier's name, amounts per layer, masks, and the
structure of the sample models (which layer's outputs feed which layer), so masking and shrinking agree."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import CompressionError

# modules that map a zero input channel/feature to a zero output channel/feature, one channel at a time
PASS_THROUGH = (nn.ReLU, nn.ReLU6, nn.GELU, nn.LeakyReLU, nn.SiLU, nn.Tanh, nn.Hardtanh, nn.Dropout, nn.Identity,
                nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def check_overrides(overrides: dict[str, float], chosen: list[str], lo: float = 0.0, hi: float = 1.0,
                    hi_open: bool = True, field_name: str = "overrides") -> None:
    """One-line errors for overrides that name a layer not selected or hold an amount out of range."""
    for name, value in overrides.items():
        if name not in chosen:
            raise CompressionError(f"{field_name}: {name!r} is not one of the selected layers: {', '.join(chosen)}")
        if value < lo or (value >= hi if hi_open else value > hi):
            rng = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
            raise CompressionError(f"{field_name}.{name}: must be in {rng}, got {value}")


def has_mask(module: nn.Module, name: str = "weight") -> bool:
    return hasattr(module, name + "_mask") and hasattr(module, name + "_orig")


def fold_masks(model: nn.Module) -> nn.Module:
    """Make every torch.nn.utils.prune reparametrisation permanent in place (``w = w_orig * w_mask``)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            name = getattr(hook, "_tensor_name", None)
            if name is not None and has_mask(module, name):
                torch_prune.remove(module, name)
    return model


def mask_count(n: int, amount: float) -> int:
    """How many of ``n`` units ``amount`` removes: ``round(amount * n)``, as torch.nn.utils.prune counts."""
    return int(round(amount * n))


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# --------------------------------------------------------------------------------------- coupling plan
def is_attention(m: nn.Module) -> bool:
    """A hand-written multi-head attention: ``qkv`` rows [q heads | k heads | v heads], ``proj``, n_heads, head_dim."""
    return (isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "proj", None), nn.Linear)
            and isinstance(getattr(m, "n_heads", None), int) and isinstance(getattr(m, "head_dim", None), int))


def is_mlp(m: nn.Module) -> bool:
    """A transformer MLP ``fc2(act(fc1(x)))`` with an activation that keeps zero at zero."""
    kids = dict(m.named_children())
    return (set(kids) == {"fc1", "act", "fc2"} and isinstance(kids["fc1"], nn.Linear)
            and isinstance(kids["fc2"], nn.Linear) and isinstance(kids["act"], PASS_THROUGH))


@dataclass
class Group:
    """One prunable dimension: the outputs of ``producer`` (rows / channels / heads), with the BatchNorm that
    normalises them and the ``consumer`` whose inputs they are (``flatten``: a conv's channels reach a Linear
    through nn.Flatten, channel c being input columns c*H*W .. (c+1)*H*W-1)."""

    producer: str
    unit: str  # "neurons" | "channels" | "heads"
    consumer: str | None = None
    bn: str | None = None
    flatten: bool = False
    between: list[str] = field(default_factory=list)


def coupling_plan(model: nn.Module) -> dict[str, Group]:
    """Every layer whose outputs can be removed, keyed by the producer's name.

    Sequential models: a Linear/Conv2d followed (through BatchNorm, activations, pooling, Flatten) by the next
    Linear/Conv2d. Transformers: each attention's heads and each MLP's hidden neurons. The residual stream of a
    transformer is coupled across all blocks and is left alone.
    """
    plan: dict[str, Group] = {}
    for name, m in model.named_modules():
        if is_attention(m):
            plan[name] = Group(name, "heads", consumer=f"{name}.proj" if name else "proj")
        elif is_mlp(m):
            p = f"{name}." if name else ""
            plan[p + "fc1"] = Group(p + "fc1", "neurons", consumer=p + "fc2")
        elif isinstance(m, nn.Sequential):
            _sequential_groups(m, f"{name}." if name else "", plan)
    return plan


def _sequential_groups(seq: nn.Sequential, prefix: str, plan: dict[str, Group]) -> None:
    kids = list(seq.named_children())
    for i, (pname, prod) in enumerate(kids):
        if not isinstance(prod, (nn.Linear, nn.Conv2d)) or (isinstance(prod, nn.Conv2d) and prod.groups != 1):
            continue
        group = Group(prefix + pname, "channels" if isinstance(prod, nn.Conv2d) else "neurons")
        for cname, mod in kids[i + 1:]:
            if isinstance(mod, NORMS) and group.bn is None and not group.between:
                group.bn = prefix + cname
            elif isinstance(mod, PASS_THROUGH):
                group.between.append(prefix + cname)
            elif isinstance(mod, nn.Flatten) and isinstance(prod, nn.Conv2d) and not group.flatten:
                group.flatten = True
            elif isinstance(mod, (nn.Linear, nn.Conv2d)):
                ok = (isinstance(mod, nn.Linear) and (group.flatten or isinstance(prod, nn.Linear))) or (
                    isinstance(mod, nn.Conv2d) and isinstance(prod, nn.Conv2d) and mod.groups == 1 and not group.flatten)
                if ok:
                    group.consumer = prefix + cname
                break
            else:
                break
        if group.consumer is not None:
            plan[group.producer] = group


def attention_types(model: nn.Module) -> tuple[type[nn.Module], ...]:
    return tuple({type(m) for m in model.modules() if is_attention(m)})
