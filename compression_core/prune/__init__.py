"""The pruning family: ``prune(model, cfg) -> new model``; the config's type picks the technique.

Unstructured (magnitude / random / threshold), structured (neurons, conv channels, attention heads), ``shrink``
(physically remove what structured pruning zeroed), layer pruning (whole blocks) and lottery tickets. Every config
is a registered recipe step; the input model is never modified.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import CompressionError
from ..technique import (ProgressFn, StepConfig, StepContext, apply_step_one_line, configs_of_family,
                         technique_ui)
from ..workload import as_workload
from ..graph import build_graph
from .importance import (
    bn_group_scores,
    group_scores,
    head_group_scores,
    head_scores,
    unit_scores,
    weight_scores,
)
from .probes import head_accuracy_drop
from .layers import LayerPruneConfig, block_importance, prune_layers, remove_block, removable_blocks
from .lottery import LotteryTicketConfig, RoundStats, lottery_ticket
from .lowrank import Factorized, LowRankConfig, factorize, low_rank_weight
from .shrink import (
    PrunedMultiheadAttention,
    ShrinkConfig,
    kept_units,
    removable_units,
    shrink,
    shrink_heads,
    slice_bn,
    slice_conv_in,
    slice_conv_out,
    slice_heads,
    slice_linear_in,
    slice_linear_out,
)
from .slimming import SlimmingConfig, bn_scale_scores, slim, slimming_masks
from .structured import StructuredPruneConfig, mask_group, mask_heads, prune_structured, select_groups
from .threshold import ThresholdPruneConfig, prune_threshold
from .unstructured import UnstructuredPruneConfig, prune_unstructured


def prune(model: nn.Module, cfg: StepConfig, workload: Any = None, *, seed: int = 0,
          progress: ProgressFn | None = None, replay: bool = False) -> nn.Module:
    """Apply a pruning config to a copy of ``model`` and return it (the input is never modified).

    ``workload`` (a compression_core.Workload, or plain data splits) is needed by steps that train or evaluate
    (lottery tickets, layer pruning by importance); it also names the classifier (left alone by default).
    Any registered config whose ``TechniqueUI.family`` is ``"prune"`` is accepted; any other is refused. Every
    failure is a one-line CompressionError.
    """
    family = technique_ui(type(cfg)).family if isinstance(cfg, StepConfig) else None
    if family != "prune":
        kinds = ", ".join(c.model_fields["kind"].default for c in configs_of_family("prune"))
        what = f"{cfg.kind!r} is a {family} technique, not a pruning one" if family else \
            f"prune() takes a pruning config object, got a {type(cfg).__name__}"
        raise CompressionError(f"kind: {what}; give prune() one of {kinds}")
    ctx = StepContext(data=as_workload(workload, model), seed=seed, progress=progress, replay=replay)
    return apply_step_one_line(model, cfg, ctx)


__all__ = [
    "LayerPruneConfig", "LotteryTicketConfig", "RoundStats", "ShrinkConfig", "StructuredPruneConfig",
    "ThresholdPruneConfig", "UnstructuredPruneConfig", "block_importance", "build_graph", "head_accuracy_drop",
    "head_scores", "kept_units", "lottery_ticket", "prune", "prune_layers", "prune_structured", "prune_threshold",
    "prune_unstructured", "remove_block", "removable_blocks", "shrink", "slice_bn", "slice_conv_in",
    "slice_conv_out", "slice_heads", "slice_linear_in", "slice_linear_out", "unit_scores", "weight_scores",
]
__all__ += ["SlimmingConfig", "bn_scale_scores", "slim", "slimming_masks"]
__all__ += ["PrunedMultiheadAttention", "bn_group_scores", "group_scores", "head_group_scores", "mask_group",
            "mask_heads", "removable_units", "select_groups", "shrink_heads"]
__all__ += ["Factorized", "LowRankConfig", "factorize", "low_rank_weight"]
