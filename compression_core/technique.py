"""Technique registry: one frozen pydantic config class per technique, registered with its handler.

The config's type picks the algorithm (torchao's ``quantize_(model, Config())`` pattern). Adding a technique is
one config class, one handler decorated with ``@register(ConfigClass)``, and one test file. The recipe schema is
built from this registry, so every registered technique is also a recipe step kind.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, ClassVar, TypeVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from .errors import CompressionError


@dataclass(frozen=True)
class TechniqueUI:
    """What a user interface needs to offer a technique, declared by the technique itself (the dashboard is built
    from these, so a new technique appears there with no dashboard edit).

    family:      "prune" | "quantize" | "train" | "distill" | "other" (which panel offers it)
    label:       the name a person reads ("int8 dynamic (real)")
    trains:      True if applying it trains (it runs as a job, not in the live preview)
    layer_types: module class names it acts on ("Linear", "Conv2d", "LSTM", "Embedding"...); () = whole model
    storage:     how its result is stored: "dense", "sparse", "int8", "int4", "fp16", "simulated", "shrunk"
    order:       position within its family's list
    hidden:      not offered as a choice (a helper step such as fit_budget that a page drives itself)
    """

    family: str
    label: str
    trains: bool = False
    layer_types: tuple[str, ...] = ()
    storage: str = "dense"
    order: int = 100
    hidden: bool = False


class StepConfig(BaseModel):
    """Base of every technique config: frozen, unknown fields rejected, tagged by ``kind``. Each subclass sets
    ``ui: ClassVar[TechniqueUI]`` describing itself to user interfaces."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str
    ui: ClassVar[TechniqueUI | None] = None

    def per_layer(self, model: nn.Module, ctx: "StepContext") -> "dict[str, StepConfig] | None":
        """How a layer cache (``layer_cache.LayerCache``) may apply this step one layer at a time.

        A technique whose result on each layer depends only on that layer's own module and its own setting (not on
        other layers, data, or a random stream that runs through several layers) returns {layer name: a config of
        the same class that, applied to a model holding that layer alone at that name, changes it exactly as this
        step changes it in ``model``}; every layer not named must be left as it is by the step. Selection messages
        (layers left dense or float) are said to ``ctx`` here, as the handler would. None, the default: the step
        depends on more than one layer (calibration, global thresholds, coupled channels, reconstruction), and the
        cache runs it on the whole model."""
        return None


ProgressFn = Callable[[float, str], None]


@dataclass
class StepContext:
    """What a step may need beyond the model: the workload (data splits, metric, classifier), a seed, progress.

    ``replay=True`` is how a saved bundle is rebuilt: each step redoes its structural change (masks, shrinking,
    module swaps to quantized types) with the same shapes but skips training, then the bundle's state_dict is
    loaded over the result. Handlers that train must honour it.
    """

    data: object  # a compression_core.Workload (``.train/.calib/.test`` splits, ``.metric``, ``.classifier``)
    seed: int = 0
    progress: ProgressFn | None = None
    replay: bool = False  # rebuild only the structure (no training); a saved state_dict is loaded afterwards
    notes: list[str] = field(default_factory=list)  # one line each for the step's report (``note``)

    @property
    def workload(self):
        return self.data

    def note(self, line: str) -> None:
        """Say something the user should read about this step's result (shown with its report, one line)."""
        self.notes.append(" ".join(str(line).split()))

    def report(self, fraction: float, message: str = "") -> None:
        if self.progress is not None:
            self.progress(min(max(fraction, 0.0), 1.0), message)


C = TypeVar("C", bound=StepConfig)
Handler = Callable[[nn.Module, C, StepContext], nn.Module]
_HANDLERS: dict[type[StepConfig], Handler] = {}


def _kind(config_cls: type[StepConfig]) -> str:
    is_config = isinstance(config_cls, type) and issubclass(config_cls, StepConfig)
    kind = getattr(config_cls.model_fields.get("kind"), "default", None) if is_config else None
    if not isinstance(kind, str) or not kind:
        raise CompressionError(f"register: {getattr(config_cls, '__name__', config_cls)!r} must be a StepConfig "
                               "subclass with a kind tag, e.g. kind: Literal['prune_mine'] = 'prune_mine'")
    return kind


def _same_definition(a: type, b: type) -> bool:
    """The same class, or the same class defined again (its module reloaded): same module and qualified name."""
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def register(config_cls: type[C]) -> Callable[[Handler], Handler]:
    """Register ``handler(model, cfg, ctx) -> new model`` for configs of type ``config_cls``.

    A ``kind`` is one technique: another class with the same kind tag is refused in one line. Registering the same
    class again (or its module reloaded) replaces the handler.
    """
    kind = _kind(config_cls)
    for other in list(_HANDLERS):
        if other.model_fields["kind"].default == kind and not _same_definition(other, config_cls):
            raise CompressionError(f"register: kind {kind!r} of {config_cls.__module__}.{config_cls.__qualname__} "
                                   f"is already registered by {other.__module__}.{other.__qualname__}; "
                                   "give the new technique its own kind tag")

    def deco(fn: Handler) -> Handler:
        for other in list(_HANDLERS):  # a reloaded module's old class gives way to the new one
            if other is not config_cls and other.model_fields["kind"].default == kind:
                del _HANDLERS[other]
        _HANDLERS[config_cls] = fn
        return fn

    return deco


def unregister(config_cls: type[StepConfig]) -> Handler | None:
    """Remove ``config_cls`` from the registry (a plugin unloaded, a test cleaning up); returns its handler."""
    return _HANDLERS.pop(config_cls, None)


def registered_configs() -> list[type[StepConfig]]:
    """Every registered technique's config class, in registration order (the one list of techniques)."""
    return list(_HANDLERS)


def configs_of_family(family: str) -> list[type[StepConfig]]:
    """The registered config classes whose ``TechniqueUI.family`` is ``family`` ("prune", "quantize", ...)."""
    return [c for c in _HANDLERS if technique_ui(c).family == family]


def technique_ui(config_cls: type[StepConfig]) -> TechniqueUI:
    """The technique's own UI metadata (a plain default built from its kind when it declares none)."""
    ui = getattr(config_cls, "ui", None)
    if isinstance(ui, TechniqueUI):
        return ui
    kind = config_cls.model_fields["kind"].default
    family = kind.split("_")[0] if kind.split("_")[0] in ("prune", "quantize") else "other"
    return TechniqueUI(family=family, label=kind.replace("_", " "))


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` that also works on torch.nn.utils.prune-pruned modules.

    Pruned modules hold ``weight = weight_orig * weight_mask`` as a non-leaf tensor, which ``copy.deepcopy``
    refuses; it is swapped for a detached copy during the copy and put back afterwards (the input is unchanged).
    """
    swapped = []
    for m in model.modules():
        for hook in m._forward_pre_hooks.values():
            name = getattr(hook, "_tensor_name", None)
            t = getattr(m, name, None) if name else None
            if isinstance(t, torch.Tensor) and t.grad_fn is not None:
                swapped.append((m, name, t))
                setattr(m, name, t.detach())
    try:
        return copy.deepcopy(model)
    finally:
        for m, name, t in swapped:
            setattr(m, name, t)


def apply_step(model: nn.Module, cfg: StepConfig, ctx: StepContext) -> nn.Module:
    """Run the handler registered for ``type(cfg)`` on a deep copy of ``model``; the input is never modified."""
    handler = _HANDLERS.get(type(cfg))
    if handler is None:
        kinds = ", ".join(sorted(c.model_fields["kind"].default for c in _HANDLERS))
        raise CompressionError(f"kind: no technique registered for {type(cfg).__name__}; known kinds: {kinds}")
    return handler(clone_model(model), cfg, ctx)


def apply_step_one_line(model: nn.Module, cfg: StepConfig, ctx: StepContext) -> nn.Module:
    """``apply_step`` for the family verbs (``prune``, ``quantize``): a model the technique cannot handle is one
    line (a CompressionError naming the technique and the first line of what failed), never a raw traceback."""
    try:
        return apply_step(model, cfg, ctx)
    except (CompressionError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:  # a model the technique cannot handle: one line, never a traceback
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise CompressionError(f"model: {cfg.kind} cannot be applied to this model ({type(e).__name__}: "
                               f"{first})") from None
