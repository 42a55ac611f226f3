"""Unstructured magnitude pruning (Han et al. 2015, "Learning both Weights and Connections for Efficient Neural
Networks"): zero the smallest individual weights, per layer or globally, with a random baseline.

Masks are torch.nn.utils.prune reparametrisations (``weight_orig`` * ``weight_mask``), so fine-tuning keeps them
and measurement folds them. The weights stay dense zeros: the file only shrinks with a sparse encoding (sparse.py).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.utils import prune as torch_prune

from ..errors import CompressionError
from ..linear_like import leave_tied, say, tied_note
from ..targets import resolve_targets
from ..technique import StepConfig, StepContext, register, TechniqueUI
from ..targets import classifier_name
from .common import check_overrides
from .magnitude_cut import CutL1Unstructured


class UnstructuredPruneConfig(StepConfig):
    """Zero ``amount`` of the weights of each selected layer (scope "layer") or of all of them together ("global").

    ``amount`` is the fraction of the weights still unpruned (torch.nn.utils.prune's convention for repeated
    pruning); on an unpruned model it is the sparsity reached, to one weight: ``round(amount * n)`` zeros.
    """

    kind: Literal["prune_unstructured"] = "prune_unstructured"
    ui = TechniqueUI(family="prune", label="unstructured (weights)",
                     layer_types=("Linear", "Conv1D", "Conv2d"), storage="sparse", order=10)
    amount: float = Field(default=0.5, ge=0, lt=1)
    scope: Literal["layer", "global"] = "layer"
    importance: Literal["l1", "random"] = "l1"
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    overrides: dict[str, float] = Field(default_factory=dict)
    include_classifier: bool = False

    def per_layer(self, model: nn.Module, ctx: StepContext) -> dict[str, "UnstructuredPruneConfig"] | None:
        """Per layer (see ``StepConfig.per_layer``) with scope "layer" and l1 importance: each layer's mask is its
        own weights' smallest ``amount``. Global scope ranks all layers together and random importance draws one
        random stream through the layers: both are whole-model steps."""
        if self.scope != "layer" or self.importance != "l1":
            return None
        chosen = select_layers(model, self, ctx)
        check_overrides(self.overrides, chosen)
        return {n: self.model_copy(update={"targets": [n], "ignore": [], "overrides": {}, "include_classifier": True,
                                           "amount": self.overrides.get(n, self.amount)}) for n in chosen}


def select_layers(model: nn.Module, cfg, ctx: StepContext | None) -> list[str]:
    """The Linear/Conv1D/Conv2d layers a magnitude-pruning config selects (classifier excluded unless asked); a layer
    whose weight is tied to another module (an output layer sharing the embedding table) is left dense, or refused
    when named: masking one of them would untie the matrix and ship it twice."""
    chosen = resolve_targets(model, cfg.targets, cfg.ignore, (nn.Linear, nn.Conv2d), classifier_name(model, ctx),
                             cfg.include_classifier)
    chosen, left = leave_tied(model, chosen, cfg.targets, cfg.kind)
    if left:
        say(ctx, f"left dense: {tied_note(model, left)}: tied weights are pruned together or not at all")
    if not chosen:
        raise CompressionError("targets: no Linear/Conv1D/Conv2d layer selected; check targets, ignore and "
                               "include_classifier")
    return chosen


def prune_unstructured(model: nn.Module, cfg: UnstructuredPruneConfig, ctx: StepContext | None = None) -> nn.Module:
    """Apply ``cfg`` to ``model`` in place (the registered handler gets a copy) and return it."""
    chosen = select_layers(model, cfg, ctx)
    check_overrides(cfg.overrides, chosen)
    seed = ctx.seed if ctx is not None else 0
    with torch.random.fork_rng(devices=[]):  # the random baseline is reproducible and leaves the global RNG alone
        torch.manual_seed(seed)
        per_layer = chosen if cfg.scope == "layer" else [n for n in chosen if n in cfg.overrides]
        for name in per_layer:
            module = model.get_submodule(name)
            amount = cfg.overrides.get(name, cfg.amount)
            if cfg.importance == "l1":
                CutL1Unstructured.apply(module, "weight", amount=amount)  # torch's l1_unstructured, its mask faster
            else:
                torch_prune.random_unstructured(module, "weight", amount=amount)
        together = [n for n in chosen if n not in per_layer]
        if together:
            method = CutL1Unstructured if cfg.importance == "l1" else torch_prune.RandomUnstructured
            params = [(model.get_submodule(n), "weight") for n in together]
            torch_prune.global_unstructured(params, pruning_method=method, amount=cfg.amount)
    return model


@register(UnstructuredPruneConfig)
def _unstructured_step(model: nn.Module, cfg: UnstructuredPruneConfig, ctx: StepContext) -> nn.Module:
    return prune_unstructured(model, cfg, ctx)
