"""Exact numbers without running the model: the file size, parameter counts and FLOPs of a configuration, computed
from the model's shapes and each step's per-layer settings, before anything is applied or evaluated.

>>> cost = estimate_cost(workload.model, [UnstructuredPruneConfig(amount=0.9), DynamicInt8Config()], workload)
>>> cost.size_bytes, cost.sparse_size_bytes, cost.params, cost.nonzero_params, cost.flops

The numbers are the ones ``measure`` reports for the model the recipe would produce (``size_bytes``: bytes of
``torch.save`` of its shippable state_dict; ``sparse_size_bytes``: of ``compression_core.sparse``'s file, when a
weight is zero; ``theoretical_size_bytes``: simulated bits; parameters and FLOPs as ``layer_stats``/``flops`` count
them). Each step's planner (``cost_steps``, ``cost_quant``) writes the state_dict its technique's modules would save
as shapes and dtypes (``cost_layout`` prices it: the pickle and the zip records of ``torch.save``, no data).
Sizes and parameter counts need shapes only; zero counts (non-zero parameters, the sparse file, non-zero FLOPs) are
arithmetic on the weights, done when asked for. What the model does is never run: the traced graph (structured
pruning, shrink), the removable blocks (prune_layers) and the FLOPs per layer come from one traced pass per model,
and static int8 / QAT's int8 graph from one structure-only replay per model and layer selection, all cached.

A number that cannot be known before running (the zeros of a trained model, blocks chosen by a measured accuracy
drop, an ONNX Runtime file) is None with the reason in ``unknown``; a configuration the library would refuse says so
in ``refused`` (the step's own one-line error), with no numbers.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from . import cost_quant as Q
from . import cost_steps as S
from . import inputs as I
from .cost_layout import Entry, Layout, layout_of
from .errors import CompressionError
from .incremental import private_copy
from .measure import _DTYPE_BITS, _formula_flops, _is_recurrent, _recurrent_flops, effective_weight, counting_flops
from .technique import StepConfig, StepContext, technique_ui
from .recipe import RecipeBase, load_recipe, step_kinds, step_seed
from .recipe import _prefix_error
from .prune.unstructured import UnstructuredPruneConfig, select_layers
from .workload import as_workload
from .graph import example_inputs
import dataclasses
from .graph import ModelGraph, _probe_zero_paths, build_graph
from .prune.layers import removable_blocks
from .measure import flops
from .technique import apply_step


class LayerCost(BaseModel):
    """One ``measure.layer_stats`` row of the planned model."""

    model_config = ConfigDict(frozen=True)
    name: str
    params: int
    nonzero: int | None
    bits: int
    simulated: bool = False


class Cost(BaseModel):
    """The computed size, parameters and FLOPs of a configuration (``stage``: computed, not measured). A field is
    None when it does not apply (no zero weight: no sparse file) or cannot be computed (then ``unknown`` says why)."""

    model_config = ConfigDict(frozen=True)
    size_bytes: int | None = None
    sparse_size_bytes: int | None = None
    theoretical_size_bytes: int | None = None
    params: int | None = None
    nonzero_params: int | None = None
    flops: int | None = None
    nonzero_flops: int | None = None
    storage: str = "dense"
    refused: str | None = None
    unknown: dict[str, str] = {}
    layers: list[LayerCost] = []
    seconds: float = 0.0
    stage: str = "computed"

    @property
    def shown_size_bytes(self) -> int | None:
        """The smallest of the file sizes (dense, sparse, simulated), as the dashboard's size chart shows."""
        sizes = [s for s in (self.size_bytes, self.sparse_size_bytes, self.theoretical_size_bytes) if s]
        return min(sizes) if sizes else None


_PLANNERS = {
    "prune_unstructured": S.prune_unstructured, "prune_threshold": S.prune_threshold,
    "prune_structured": S.prune_structured, "shrink": S.shrink, "prune_layers": S.prune_layers, "lowrank": S.lowrank,
    "quantize_dynamic": Q.quantize_dynamic, "quantize_static": Q.quantize_static, "quantize_qat": Q.quantize_static,
    "quantize_int4": Q.quantize_int4, "quantize_weight_only": Q.quantize_weight_only,
    "quantize_embedding": Q.quantize_embedding, "quantize_half": Q.quantize_half,
    "fake_quant": Q.fake_quant, "finetune": S.trains, "distill": S.trains, "reinit": S.trains,
    "lottery_ticket": S.trains, "network_slimming": S.trains, "fit_budget": S.trains,
}


# ----------------------------------------------------------------------------------------- per-model facts
class _Replay:
    def __init__(self, layout: Layout, flops: tuple[int, int] | None) -> None:
        self.layout, self.flops = layout, flops


class _Flops:
    """FLOPs of one forward pass as ``measure.flops`` counts them, per layer: (counted, formula) of each layer it
    hooks, each recurrent layer's formula, and the counter's total under each module."""

    def __init__(self, total: int, layers: dict, recurrent: dict, modules: dict, inputs: dict) -> None:
        self.total, self.layers, self.recurrent, self.modules, self.inputs = total, layers, recurrent, modules, inputs


class _Info:
    """What is known about one model (and workload): its layout, traced graphs, FLOPs and replays, each computed
    once (a lock keeps concurrent estimates from building them twice)."""

    def __init__(self, model: nn.Module, wl: Any) -> None:
        self.model, self.wl = model, wl
        self.lock = threading.RLock()
        self._cache: dict = {}
        self.problem = _unsupported(model)
        self.base = layout_of(model) if self.problem is None else Layout(OrderedDict(), OrderedDict())
        self.counts: dict = {}  # zero counts by derivation (Entry.ckey)
        for k, e in self.base.items():
            e.ckey, e.cache = (k,), self.counts

    def cached(self, key, build):
        with self.lock:
            if key not in self._cache:
                try:
                    self._cache[key] = build()
                except CompressionError as e:
                    self._cache[key] = e
            value = self._cache[key]
        if isinstance(value, CompressionError):
            raise value
        return value

    def example(self, n: int = 4):

        return example_inputs(StepContext(data=self.wl), "data", n=n)

    def graph(self, probe: bool):
        """The traced graph as structured pruning (probe=True) and shrink (probe=False) build it."""


        def build():
            ex = self.example()
            g = build_graph(self.model, ex, probe=False)
            plain = ModelGraph(g.model, {n: dataclasses.replace(x) for n, x in g.groups.items()}, dict(g.heads),
                               g.dg, g.example)
            was = g.model.training
            try:
                _probe_zero_paths(g.model, g.groups, ex)  # the model traced (a copy when it has Conv1D layers)
            finally:
                g.model.train(was)
            return g, plain

        probed, plain = self.cached("graph", build)
        return probed if probe else plain

    def removable_blocks(self) -> list[str]:

        return self.cached("blocks", lambda: removable_blocks(self.model, self.example(2)))

    def static_replay(self, cfg) -> _Replay:
        key = ("static", cfg.kind, cfg.targets, cfg.ignore, cfg.include_classifier, cfg.weights, cfg.weight_bits,
               cfg.fuse)

        def build():

            try:
                model = apply_step(self.model, cfg, StepContext(data=self.wl, replay=True))
            except CompressionError:
                raise
            except Exception as e:  # noqa: BLE001 - as apply_recipe words it
                raise CompressionError(f"{cfg.kind}: cannot be applied here ({type(e).__name__}: "
                                       f"{(str(e).splitlines() or [''])[0][:300]})") from None
            fl = flops(model, I.take(self.wl.test.x, slice(0, 1))) if self.wl is not None else None
            return _Replay(layout_of(model), fl)

        return self.cached(key, build)

    def flops(self) -> _Flops:
        if self.wl is None:
            raise CompressionError("workload: FLOPs are counted on one of the workload's inputs; pass the workload")
        return self.cached("flops", lambda: _layer_flops(self.model, I.take(self.wl.test.x, slice(0, 1))))


def _unsupported(model: nn.Module) -> str | None:
    for name, m in model.named_modules():
        if callable(getattr(m, "layer_stats", None)) or callable(getattr(m, "_weight_bias", None)) or (
                callable(getattr(m, "weight", None)) and not isinstance(getattr(m, "weight"), torch.Tensor)):
            return f"the model is already compressed ({name or 'model'} is a {type(m).__name__}); estimates start " \
                   "from the float model"
    return None


_INFOS: "weakref.WeakKeyDictionary[nn.Module, dict[int, tuple[Any, _Info, tuple]]]" = weakref.WeakKeyDictionary()
_INFOS_LOCK = threading.Lock()


def _signature(model: nn.Module) -> tuple:
    """Changes when a tensor of the model is replaced or changed in place (its version counter): cheap, no data."""
    return tuple((n, t.data_ptr(), t._version, tuple(t.shape), t.dtype)
                 for n, t in list(model.named_parameters()) + list(model.named_buffers()))


def _info(model: nn.Module, wl: Any) -> _Info:
    sig = _signature(model)
    with _INFOS_LOCK:
        per = _INFOS.setdefault(model, {})
        if id(wl) not in per or per[id(wl)][2] != sig:  # the workload is kept alive with its facts (no id reuse)
            per[id(wl)] = (wl, _Info(model, wl), sig)
        return per[id(wl)][1]


@torch.no_grad()
def _layer_flops(model: nn.Module, example: Any) -> _Flops:
    """``measure.flops``'s count, kept per layer (the same hooks, the same counter), traced on a copy of the module
    tree (its tensors shared): the hooks and the eval switch never touch ``model``, which other threads of a live
    server may be running or tracing at the same time (a page's layer graph, the warm-up, a stage's forward)."""
    model = private_copy(model)
    was = model.training
    model.eval()
    args, kwargs = I.example_args(I.cast_floats(example, I.input_dtype(model)))
    layers: dict[str, int] = {}
    recurrent: dict[str, int] = {}
    inputs: dict[str, int] = {}  # 2 x the positions of each layer's input (a conv's input resolution)
    hooks = []  # on the private copy: only this thread runs them
    for name, module in model.named_modules():
        if effective_weight(module) is not None and not any(effective_weight(c) is not None
                                                            for c in module.children()):
            def hook(mod, inp, out, name=name):
                layers[name] = layers.get(name, 0) + _formula_flops(mod, out)
                x = inp[0] if inp and isinstance(inp[0], torch.Tensor) else None
                if x is not None and x.dim() == 4:
                    inputs[name] = inputs.get(name, 0) + 2 * x.shape[0] * x.shape[2] * x.shape[3]
            hooks.append(module.register_forward_hook(hook))
        elif _is_recurrent(module):
            def rhook(mod, inp, out, name=name):
                recurrent[name] = recurrent.get(name, 0) + _recurrent_flops(mod, inp, out)
            hooks.append(module.register_forward_hook(rhook))
    try:
        with counting_flops(model) as (mode, modules):
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    total = int(mode.get_total_flops())
    total += sum(f for n, f in {**layers, **recurrent}.items() if not modules.get(n))
    return _Flops(total, {n: (modules.get(n, 0), f) for n, f in layers.items()}, recurrent, modules, inputs)


# -------------------------------------------------------------------------------------------------- FLOPs
def _flops(p: S.Plan, unknown: dict) -> tuple[int | None, int | None]:
    fl = p.info.flops()
    if p.flops_unknown:
        unknown["flops"] = unknown["nonzero_flops"] = p.flops_unknown
        return None, None
    if p.static is not None and p.static.flops is not None:
        if not p.reshaped:
            if all(e.stored_zeros() is not None for _, e in p.layout.items() if e.qscheme):
                return p.static.flops
            unknown["nonzero_flops"] = p.why_unknown
            return p.static.flops[0], None
        if p.static.flops[0] != fl.total:
            unknown["flops"] = unknown["nonzero_flops"] = "an int8 graph after shrink: which of its ops are " \
                "counted is known from a replay of the shrunk model"
            return None, None

    def gone(name: str) -> bool:
        return any(name == b or name.startswith(b + ".") for b in p.removed)

    entries = list(p.layout.items()) + list(p.phantoms.items())
    weights: dict[str, list[Entry]] = {}
    for _, e in entries:
        if e.pcount and e.role.startswith("weight"):
            weights.setdefault(e.layer, []).append(e)
    base = {e.layer: e for _, e in p.base.items() if e.pcount and e.role == "weight"}
    total = fl.total - sum(fl.modules.get(b, 0) for b in p.removed)
    total -= sum(f for n, (c, f) in fl.layers.items() if gone(n) and not c)
    total -= sum(f for n, f in fl.recurrent.items() if gone(n) and not fl.modules.get(n))
    cut = 0
    known = True
    for name, (counted, f) in fl.layers.items():
        if gone(name):
            continue
        e, e0 = p.flop_weight.get(name) or (weights.get(name) or [None])[0], base.get(name)
        if name in p.factorized:  # low rank: its factors, plain layers at the layer's (or its input's) positions
            positions = f // _prod(_fdims(S.is_conv1d(p.model.get_submodule(name)), e0.shape))
            total -= counted if counted else f
            for key, at_input in p.factorized[name]:
                child = p.layout.entries[key]
                f_child = (fl.inputs.get(name, 0) if at_input else positions) * _prod(_fdims(False, child.shape))
                total += f_child
                z = child.param_zeros()
                if z is None:
                    known = False
                else:
                    cut += int(round(f_child * (1.0 - (child.pcount - z) / max(child.pcount, 1))))
            continue
        if e is None and not counted and not f:  # a BatchNorm folded into its conv
            continue
        if e is None or e0 is None:
            unknown["flops"] = unknown["nonzero_flops"] = f"layer {name!r}: its weight is not where the " \
                "estimate looks for it"
            return None, None
        conv1d = S.is_conv1d(p.model.get_submodule(name))
        o0, r0 = _fdims(conv1d, e0.eshape or e0.shape)
        o1, r1 = _fdims(conv1d and name not in p.linearized, e.eshape or e.shape)
        f_new = f // (o0 * r0) * (o1 * r1) if f else 0  # measure's formula: 2 x outputs x weight.shape[1:]
        total += (counted // e0.pcount * e.pcount - counted) if counted else f_new - f
        z = e.param_zeros()
        if z is None:
            known = False
            continue
        cut += int(round(f_new * (1.0 - (e.pcount - z) / max(e.pcount, 1))))
    for name, (kept, heads) in p.head_ratio.items():
        inside = sum(c for n, (c, _) in fl.layers.items() if n.startswith(name + ".") or not name)
        other = fl.modules.get(name, 0) - inside
        total += other // heads * kept - other
    for name, f in fl.recurrent.items():
        if gone(name) or name in p.dense_flops:
            continue
        ws = weights.get(name, [])
        zs = [e.param_zeros() for e in ws]
        if any(z is None for z in zs):
            known = False
            continue
        numel = sum(e.pcount for e in ws)
        density = (numel - sum(zs)) / max(numel, 1) if ws else 1.0
        cut += int(round(f * (1.0 - density)))
    if not known:
        unknown["nonzero_flops"] = p.why_unknown
    return total, total - cut if known else None


def _prod(dims: tuple[int, int]) -> int:
    return dims[0] * dims[1]


def _fdims(conv1d: bool, shape: tuple[int, ...]) -> tuple[int, int]:
    """(outputs, weight.shape[1:] product) of a layer as ``measure``'s FLOP formula reads its weight (a Conv1D's
    weight is (in, out): its outputs are shape[1], and so is what the formula multiplies them by)."""
    if conv1d:
        return shape[1], shape[1]
    rest = 1
    for d in shape[1:]:
        rest *= d
    return shape[0], rest


# --------------------------------------------------------------------------------------------------- cost
def _rows(p: S.Plan) -> tuple[list[LayerCost], bool]:
    rows: OrderedDict[str, list] = OrderedDict()
    known = True
    seen: set[int] = set()  # a tensor stored under two keys, a parameter of two modules (tied): counted once
    for _, e in list(p.layout.items()) + list(p.phantoms.items()):
        if not e.pcount or id(e) in seen or (e.pid is not None and e.pid in seen):
            continue
        seen.update({id(e), e.pid} - {None})
        z = e.param_zeros()
        known &= z is not None
        row = rows.setdefault(e.layer, [0, 0, None])
        row[0] += e.pcount
        row[1] = None if z is None or row[1] is None else row[1] + e.pcount - z
        if row[2] is None or e.role == "weight":
            row[2] = e.bits or _DTYPE_BITS.get(e.dtype, torch.empty((), dtype=e.dtype).element_size() * 8)
    return [LayerCost(name=n, params=r[0], nonzero=r[1], bits=r[2], simulated=n in p.simulated)
            for n, r in rows.items()], known


def _steps(recipe_or_steps: Any, seed: int) -> list[tuple[StepConfig, int]]:

    if (isinstance(recipe_or_steps, dict) and "kind" not in recipe_or_steps) or isinstance(recipe_or_steps, str) \
            or hasattr(recipe_or_steps, "__fspath__"):
        recipe_or_steps = load_recipe(recipe_or_steps)
    if isinstance(recipe_or_steps, RecipeBase):
        return [(c, step_seed(recipe_or_steps.seed, i)) for i, c in enumerate(recipe_or_steps.steps)]
    steps = [recipe_or_steps] if isinstance(recipe_or_steps, (StepConfig, dict)) else list(recipe_or_steps or [])
    kinds = step_kinds()
    out = []
    for s in steps:
        if isinstance(s, dict):
            if s.get("kind") not in kinds:
                raise CompressionError(f"kind: unknown step kind {s.get('kind')!r}; choose one of {', '.join(kinds)}")
            s = kinds[s["kind"]](**s)
        out.append((s, seed))
    return out


def estimate_cost(model: nn.Module, recipe_or_steps: Any = (), workload: Any = None, *, seed: int = 0) -> Cost:
    """The size, parameters and FLOPs of ``model`` after ``recipe_or_steps`` (a Recipe, its dict or file, a step
    config or a list of them), computed without applying the steps or running the model.

    ``workload`` (a Workload) names the classifier and gives the inputs that the graph, the FLOPs and static int8's
    replay are traced on (without it FLOPs and the steps that trace are unknown). ``seed``: the seed of every step
    of a plain list (a Recipe seeds its steps as ``apply_recipe`` does). Estimates of the same model reuse what was
    traced for it (cached while the model lives)."""

    t0 = time.perf_counter()
    wl = as_workload(workload, model)
    steps = _steps(recipe_or_steps, seed)
    info = _info(model, wl)
    storage = "dense"
    for cfg, _ in steps:
        storage = technique_ui(type(cfg)).storage if technique_ui(type(cfg)).family != "train" else storage
    if info.problem is not None:
        return Cost(storage=storage, unknown={"all": info.problem}, seconds=time.perf_counter() - t0)
    p = S.Plan(info, info.base)
    for i, (cfg, step_seed) in enumerate(steps):
        planner = _PLANNERS.get(cfg.kind)
        try:
            if planner is None:
                raise S.NotEstimated(f"{cfg.kind} has no size arithmetic here")
            planner(p, cfg, StepContext(data=wl, seed=step_seed))
        except CompressionError as e:
            return Cost(storage=storage, refused=_prefix_error(str(e), i, cfg), seconds=time.perf_counter() - t0)
        except S.NotEstimated as e:
            return Cost(storage=storage, unknown={"all": f"steps[{i}] ({cfg.kind}): {e}"},
                        seconds=time.perf_counter() - t0)
        except Exception as e:  # noqa: BLE001 - a model the planner does not follow: no number rather than a wrong one
            first = (str(e).strip().splitlines() or [""])[0][:200]
            return Cost(storage=storage, unknown={"all": f"steps[{i}] ({cfg.kind}): not estimated here "
                                                         f"({type(e).__name__}: {first})"},
                        seconds=time.perf_counter() - t0)
    unknown: dict[str, str] = {}
    rows, known = _rows(p)
    params = sum(r.params for r in rows)
    nonzero = sum(r.nonzero for r in rows) if known else None
    sparse = None
    if not known:
        unknown["nonzero_params"] = unknown["sparse_size_bytes"] = p.why_unknown
    elif nonzero < params:
        sparse = p.layout.sparse_size_bytes()
        encodable = all(isinstance(v, (Entry, tuple, torch.dtype)) or v is None for v in p.layout.entries.values())
        if sparse is None and encodable:
            unknown["sparse_size_bytes"] = "a calibrated scale or zero point may be zero: known after applying"
    simulated = any(r.simulated for r in rows)
    flops = nonzero_flops = None
    try:
        flops, nonzero_flops = _flops(p, unknown)
    except CompressionError as e:
        unknown["flops"] = unknown["nonzero_flops"] = str(e)
    return Cost(size_bytes=p.layout.size_bytes(), sparse_size_bytes=sparse,
                theoretical_size_bytes=sum(r.bits * r.params for r in rows) // 8 if simulated else None,
                params=params, nonzero_params=nonzero, flops=flops, nonzero_flops=nonzero_flops, storage=storage,
                unknown=unknown, layers=rows, seconds=time.perf_counter() - t0)


def prepare_estimates(model: nn.Module, workload: Any = None) -> bool:
    """Do now what the first estimate of a pruned configuration of ``model`` would do first (a live page calls it in
    the background when a model is opened, so a student's first move does not wait for it): the layout read, the
    FLOPs traced, and each prunable weight's magnitudes sorted (one sort per weight per process, shared with
    magnitude pruning's masks; on minilm-topics ~0.9 s of a first estimate's 1.2 s). Changes no number. True when
    the model's sizes can be estimated at all."""
    cfg = UnstructuredPruneConfig(amount=0.5, include_classifier=True)
    cost = estimate_cost(model, [cfg], workload)  # the layout and the FLOPs' trace, kept per model
    if "all" in cost.unknown or cost.refused is not None:
        return False
    wl = as_workload(workload, model)
    info = _info(model, wl)
    for name in select_layers(model, cfg, StepContext(data=wl)):
        e = info.base.entries.get(name + ".weight")
        if e is not None:
            S.sorted_magnitudes(info, e)
    return True


__all__ = ["Cost", "LayerCost", "estimate_cost", "prepare_estimates"]
