"""Helpers shared by the pruning techniques: amounts per layer and masks (``compression_core.io.fold_masks`` makes
them permanent). Which layers are coupled comes from the traced graph (``compression_core.graph``), not from here."""

from __future__ import annotations

from torch import nn

from ..errors import CompressionError


def check_overrides(overrides: dict[str, float], chosen: list[str], lo: float = 0.0, hi: float = 1.0,
                    hi_open: bool = True, field_name: str = "overrides") -> None:
    """One-line errors for overrides that name a layer not selected or hold an amount out of range."""
    for name, value in overrides.items():
        if name not in chosen:
            raise CompressionError(f"{field_name}: {name!r} is not one of the selected layers: {', '.join(chosen)}")
        if value < lo or (value >= hi if hi_open else value > hi):
            rng = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
            raise CompressionError(f"{field_name}.{name}: must be in {rng}, got {value}")


def mask_count(n: int, amount: float) -> int:
    """How many of ``n`` units ``amount`` removes: ``round(amount * n)``, as torch.nn.utils.prune counts."""
    return int(round(amount * n))


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


# --------------------------------------------------------------------------------------- attention
def is_attention(m: nn.Module) -> bool:
    """A hand-written multi-head attention with a packed ``qkv`` projection, ``proj``, ``n_heads`` and ``head_dim``
    (used for the per-head accuracy probe; pruning finds heads from the traced graph, ``compression_core.graph``)."""
    return (isinstance(getattr(m, "qkv", None), nn.Linear) and isinstance(getattr(m, "proj", None), nn.Linear)
            and isinstance(getattr(m, "n_heads", None), int) and isinstance(getattr(m, "head_dim", None), int))
