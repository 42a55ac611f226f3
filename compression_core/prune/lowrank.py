"""Low-rank factorisation: each selected layer becomes two or three smaller layers; parameters and FLOPs really fall.

- Linear (and Hugging Face ``transformers``' ``Conv1D``, a Linear with a transposed (in, out) weight): truncated SVD,
  ``W (out, in) ~= U_r S_r V_r^T`` becomes ``Linear(in, r, bias=False)`` then ``Linear(r, out)`` (Xue et al. 2013,
  "Restructuring of Deep Neural Network Acoustic Models with Singular Value Decomposition"; Denton et al. 2014,
  "Exploiting Linear Structure Within Convolutional Networks for Efficient Evaluation"). By Eckart and Young (1936,
  "The Approximation of One Matrix by Another of Lower Rank") it is the best rank-r approximation in the Frobenius
  norm, with error ``sqrt(sum of the dropped singular values squared)``. The singular values are split evenly
  (``sqrt(S)`` on each side) so both factors have the same scale (fine-tuning and quantizing them afterwards behave).
- Conv2d KxK: Tucker-2 (Kim et al. 2016, "Compression of Deep Convolutional Neural Networks for Fast and Low Power
  Mobile Applications", ICLR): the kernel (C_out, C_in, K, K) is decomposed along its two channel modes by HOSVD
  (De Lathauwer et al. 2000, "A Multilinear Singular Value Decomposition": the leading left singular vectors of the
  mode-0 and mode-1 unfoldings, plain ``torch.linalg.svd``) into a 1x1 conv C_in -> R_in, the core KxK conv
  R_in -> R_out (the original stride, padding, dilation) and a 1x1 conv R_out -> C_out with the bias. Kim et al.
  pick the ranks by variational Bayesian matrix factorisation and fine-tune afterwards; here the ranks come from
  ``rank_ratio``, ``energy`` or ``param_ratio`` and fine-tuning is a separate ``finetune`` step.
- Conv2d with ``method="svd"`` (and 1x1 convs under ``"auto"``): SVD of the (C_out, C_in*K*K) unfolding, a KxK conv
  C_in -> r (stride, padding, dilation) then a 1x1 conv r -> C_out (Zhang et al. 2016, "Accelerating Very Deep
  Convolutional Networks for Classification and Detection", their channel decomposition without the nonlinear step).

A layer is factorised only when the factors have fewer weights than the layer (``r*(in+out) < in*out`` for SVD);
otherwise it is left as is and the step's report says so. The factors are a ``Factorized`` (an ``nn.Sequential``
of plain Linear/Conv2d layers), so measuring, quantizing, pruning, exporting and fine-tuning see ordinary layers.
Grouped/depthwise convs, a class with its own ``forward``, ``nn.MultiheadAttention``'s ``out_proj`` (read by its
parent directly) and tied weights are skipped with the reason. Replay (bundles) rebuilds the same shapes without an
SVD; with ``energy`` the ranks come from the singular values of the weights the step is given, so a bundle whose
recipe trains BEFORE an energy step cannot rebuild them (pin the ranks with ``overrides``: the report lists them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from ..errors import CompressionError
from ..io import shippable_state_dict, state_dict_bytes
from ..targets import check_pattern, classifier_name, resolve_targets
from ..technique import StepConfig, StepContext, TechniqueUI, register
from .common import set_submodule

Method = Literal["auto", "svd", "tucker2"]
RankRatio = Annotated[float, Field(gt=0, le=1)]
# the per-layer levels sensitivity sweeps and the budget fit picks from (fractions of each layer's full rank)
RANK_LEVELS: tuple[float, ...] = (1.0, 0.75, 0.5, 0.25, 0.1)


class LowRankConfig(StepConfig):
    """Factorise each selected layer: truncated SVD for Linear/Conv1D (two layers), Tucker-2 for KxK Conv2d (three
    convs; Kim et al. 2016); the rank by ``rank_ratio`` (fraction of the full rank), by ``energy`` (smallest rank
    keeping this fraction of the sum of squared singular values) or by ``param_ratio`` (largest rank whose factors
    keep at most this fraction of the layer's weights); ``overrides`` set a rank ratio per layer. A layer whose
    factors would not have fewer weights is left as is."""

    kind: Literal["lowrank"] = "lowrank"
    ui = TechniqueUI(family="prune", label="low-rank (SVD / Tucker-2)", layer_types=("Linear", "Conv2d", "Conv1D"),
                     storage="shrunk", order=70)
    method: Method = Field(default="auto", description="auto: SVD for Linear/Conv1D and 1x1 convs, Tucker-2 for "
                                                       "KxK convs; svd: SVD for all; tucker2: Conv2d layers only")
    rank_ratio: float = Field(default=0.5, gt=0, le=1, description="fraction of each layer's full rank kept")
    energy: float = Field(default=0.0, ge=0, le=1, description="when > 0: the smallest rank keeping this fraction "
                                                               "of the sum of squared singular values")
    param_ratio: float = Field(default=0.0, ge=0, lt=1, description="when > 0: the largest rank whose factors keep "
                                                                    "at most this fraction of the layer's weights")
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    include_classifier: bool = False
    overrides: dict[str, RankRatio] = Field(default_factory=dict)  # layer name or re: pattern -> rank ratio

    @model_validator(mode="after")
    def _one_criterion(self):
        given = [n for n in ("energy", "param_ratio") if getattr(self, n) > 0]
        if "rank_ratio" in self.model_fields_set:
            given.insert(0, "rank_ratio")
        if len(given) > 1:
            raise ValueError(f"{given[1]}: give one of rank_ratio, energy or param_ratio, not {' and '.join(given)}")
        return self

    @property
    def criterion(self) -> str:
        return "energy" if self.energy > 0 else "param_ratio" if self.param_ratio > 0 else "rank_ratio"


# ------------------------------------------------------------------------------------------------ the factors
class Factorized(nn.Sequential):
    """A layer replaced by its low-rank factors, applied in order (in -> r -> out): plain Linear or Conv2d layers,
    the original bias on the last one."""


def is_conv1d(module: nn.Module) -> bool:
    """``transformers.pytorch_utils.Conv1D`` (found by its shape, not imported): y = x @ W + b, W (in, out)."""
    return (type(module).__name__ == "Conv1D" and isinstance(getattr(module, "weight", None), torch.Tensor)
            and module.weight.dim() == 2 and hasattr(module, "nf"))


def _matrix(module: nn.Module) -> torch.Tensor:
    """The weight as the (out, in) matrix the SVD factorises (a conv's kernel unfolded to (C_out, C_in*K*K))."""
    w = module.weight.detach()
    if is_conv1d(module):
        return w.t()  # (out, in)
    return w.reshape(w.shape[0], -1)  # (out, in) or (C_out, C_in*K*K)


@torch.no_grad()
def svd_factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first (r, in), second (out, r), all singular values) of ``matrix`` (out, in) truncated to ``rank``:
    ``second @ first`` is the best rank-r approximation (Eckart-Young), computed in float64."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)  # (out, k), (k,), (k, in)
    root = s[:rank].sqrt()  # (r,)
    return root[:, None] * vh[:rank], u[:, :rank] * root[None, :], s


def _leading(unfolding: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the ``rank`` leading left singular vectors (rows, r), all singular values) of an unfolding."""
    u, s, _ = torch.linalg.svd(unfolding, full_matrices=False)
    return u[:, :rank], s


@torch.no_grad()
def tucker2_factors(weight: torch.Tensor, rank_in: int, rank_out: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(U_in (C_in, R_in), core (R_out, R_in, K, K), U_out (C_out, R_out)) of a conv kernel (C_out, C_in, K, K) by
    HOSVD of its mode-0 and mode-1 unfoldings (float64): ``W ~= core x_0 U_out x_1 U_in``."""
    w = weight.double()
    c_out, c_in = w.shape[:2]
    u_out, _ = _leading(w.reshape(c_out, -1), rank_out)  # mode-0 unfolding (C_out, C_in*K*K)
    u_in, _ = _leading(w.transpose(0, 1).reshape(c_in, -1), rank_in)  # mode-1 unfolding (C_in, C_out*K*K)
    core = torch.einsum("oikl,oa,ib->abkl", w, u_out, u_in)  # (R_out, R_in, K, K)
    return u_in, core, u_out


def tucker2_weight(u_in: torch.Tensor, core: torch.Tensor, u_out: torch.Tensor) -> torch.Tensor:
    """The kernel the three Tucker-2 convs compute together: ``core x_0 U_out x_1 U_in`` (C_out, C_in, K, K)."""
    return torch.einsum("abkl,oa,ib->oikl", core, u_out, u_in)


def _conv(cin: int, cout: int, k: tuple[int, int], like: nn.Conv2d | None, bias: bool, w: torch.Tensor) -> nn.Conv2d:
    """A Conv2d cin -> cout with kernel ``k``; ``like`` gives stride/padding/dilation/padding_mode (else 1x1 plain)."""
    kw = dict(stride=like.stride, padding=like.padding, dilation=like.dilation, padding_mode=like.padding_mode) \
        if like is not None else {}
    return nn.Conv2d(cin, cout, k, bias=bias, device=w.device, dtype=w.dtype, **kw)


def _finish(layers: list[nn.Module], original: nn.Module, values: list[torch.Tensor] | None) -> Factorized:
    """The Factorized of ``layers`` with ``values`` copied into their weights (None: replay, shapes only) and the
    original bias on the last layer."""
    out = Factorized(*layers)
    with torch.no_grad():
        if values is not None:
            for layer, v in zip(layers, values):
                layer.weight.copy_(v.reshape(layer.weight.shape).to(layer.weight.dtype))
        if original.bias is not None:
            layers[-1].bias.copy_(original.bias.detach())
    return out.train(original.training)


def factorize_linear(layer: nn.Module, rank: int, compute: bool = True) -> Factorized:
    """A Linear (or Conv1D) as ``Linear(in, rank, bias=False)`` then ``Linear(rank, out)`` by truncated SVD (no
    check that it is smaller: ``factorize`` does that). ``compute=False``: the shapes only (replay)."""
    w = layer.weight
    out_f, in_f = _matrix(layer).shape
    layers = [nn.Linear(in_f, rank, bias=False, device=w.device, dtype=w.dtype),
              nn.Linear(rank, out_f, bias=layer.bias is not None, device=w.device, dtype=w.dtype)]
    values = list(svd_factors(_matrix(layer), rank)[:2]) if compute else None
    return _finish(layers, layer, values)


def factorize_conv_svd(conv: nn.Conv2d, rank: int, compute: bool = True) -> Factorized:
    """A Conv2d as a KxK conv C_in -> rank (its stride, padding, dilation) then a 1x1 conv rank -> C_out (bias), by
    SVD of the (C_out, C_in*K*K) unfolding."""
    w = conv.weight
    c_out, c_in = w.shape[:2]
    layers = [_conv(c_in, rank, conv.kernel_size, conv, False, w), _conv(rank, c_out, (1, 1), None, conv.bias is not None, w)]
    values = list(svd_factors(_matrix(conv), rank)[:2]) if compute else None
    return _finish(layers, conv, values)


def tucker2_conv(conv: nn.Conv2d, rank_in: int, rank_out: int, compute: bool = True) -> Factorized:
    """A KxK Conv2d as Tucker-2 (Kim et al. 2016): 1x1 conv C_in -> R_in, the core KxK conv R_in -> R_out (the
    original stride, padding, dilation, padding mode), 1x1 conv R_out -> C_out with the bias."""
    w = conv.weight
    c_out, c_in = w.shape[:2]
    layers = [_conv(c_in, rank_in, (1, 1), None, False, w), _conv(rank_in, rank_out, conv.kernel_size, conv, False, w),
              _conv(rank_out, c_out, (1, 1), None, conv.bias is not None, w)]
    values = None
    if compute:
        u_in, core, u_out = tucker2_factors(w.detach(), rank_in, rank_out)
        values = [u_in.t(), core, u_out]  # (R_in, C_in), (R_out, R_in, K, K), (C_out, R_out)
    return _finish(layers, conv, values)


# ------------------------------------------------------------------------------------------------------ ranks
def rank_of(ratio: float, full: int) -> int:
    """The rank a ratio of the full rank gives: ``ratio * full`` rounded half up, at least 1, at most ``full``."""
    return max(1, min(full, int(math.floor(ratio * full + 0.5 + 1e-9))))


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest rank whose leading singular values keep ``energy`` of the sum of their squares."""
    e = singular_values.double() ** 2
    kept = torch.cumsum(e, 0) / e.sum().clamp(min=1e-300)
    return max(1, min(len(e), int((kept < energy - 1e-12).sum()) + 1))


@dataclass(frozen=True)
class LayerPlan:
    """What ``factorize`` does to one layer: its method, ranks (``(r,)`` for SVD, ``(R_in, R_out)`` for Tucker-2),
    full ranks and weight counts before and after (the bias stays, on the last factor)."""

    name: str
    method: Literal["svd", "tucker2"]
    ranks: tuple[int, ...]
    full: tuple[int, ...]
    before: int
    after: int

    @property
    def shrinks(self) -> bool:
        return self.after < self.before

    def describe(self, named: bool = True) -> str:
        head = f"{self.name} " if named else ""
        if self.method == "svd":
            return f"{head}rank {self.ranks[0]}/{self.full[0]}"
        return f"{head}Tucker-2 ranks {self.ranks[0]}/{self.full[0]} in, {self.ranks[1]}/{self.full[1]} out"


def layer_method(module: nn.Module, method: str) -> Literal["svd", "tucker2"]:
    """The decomposition a layer gets: Tucker-2 for a KxK Conv2d under "auto" (and every Conv2d under "tucker2"),
    SVD otherwise."""
    if isinstance(module, nn.Conv2d) and (method == "tucker2" or (method == "auto" and module.weight[0, 0].numel() > 1)):
        return "tucker2"
    return "svd"


def _svd_after(module: nn.Module, r: int) -> int:
    out_f, in_f = _matrix(module).shape
    return r * (in_f + out_f)


def _tucker_after(module: nn.Module, r_in: int, r_out: int) -> int:
    c_out, c_in = module.weight.shape[:2]
    return c_in * r_in + r_in * r_out * module.weight[0, 0].numel() + r_out * c_out


def _tucker_ratio(module: nn.Module, fraction: float) -> float:
    """The largest ratio (of both channel modes) whose Tucker-2 factors keep at most ``fraction`` of the weights
    (the smallest ratio when none does)."""
    w = module.weight
    c_out, c_in = w.shape[:2]
    full_out, full_in = min(c_out, w[0].numel()), min(c_in, c_out * w[0, 0].numel())
    options = sorted({k / full_out for k in range(1, full_out + 1)} | {k / full_in for k in range(1, full_in + 1)})
    fits = [q for q in options if _tucker_after(module, rank_of(q, full_in), rank_of(q, full_out)) <= fraction * w.numel()]
    return fits[-1] if fits else options[0]


def plan_layer(name: str, module: nn.Module, method: str = "auto", *, ratio: float | None = None,
               energy: float = 0.0, param_ratio: float = 0.0) -> LayerPlan:
    """The ranks for one layer by ``ratio`` of its full rank, by ``energy`` (needs an SVD of the weight) or by
    ``param_ratio`` (the largest rank whose factors keep at most that fraction of its weights); shapes otherwise."""
    how = layer_method(module, method)
    before = module.weight.numel()
    if how == "svd":
        out_f, in_f = _matrix(module).shape
        full = min(out_f, in_f)
        if energy > 0:
            r = energy_rank(torch.linalg.svdvals(_matrix(module).double()), energy)
        elif param_ratio > 0:
            r = max(1, min(full, int(param_ratio * before // (in_f + out_f))))
        else:
            r = rank_of(1.0 if ratio is None else ratio, full)
        return LayerPlan(name, "svd", (r,), (full,), before, _svd_after(module, r))
    w = module.weight.detach()
    c_out, c_in = w.shape[:2]
    full_out, full_in = min(c_out, w[0].numel()), min(c_in, c_out * w[0, 0].numel())
    if energy > 0:
        r_out = energy_rank(torch.linalg.svdvals(w.reshape(c_out, -1).double()), energy)
        r_in = energy_rank(torch.linalg.svdvals(w.transpose(0, 1).reshape(c_in, -1).double()), energy)
    else:
        q = _tucker_ratio(module, param_ratio) if param_ratio > 0 else 1.0 if ratio is None else ratio
        r_in, r_out = rank_of(q, full_in), rank_of(q, full_out)
    return LayerPlan(name, "tucker2", (r_in, r_out), (full_in, full_out), before, _tucker_after(module, r_in, r_out))


def build_factors(module: nn.Module, plan: LayerPlan, compute: bool = True) -> Factorized:
    """The Factorized ``plan`` describes for ``module`` (``compute=False``: shapes only, for replay)."""
    if plan.method == "tucker2":
        return tucker2_conv(module, plan.ranks[0], plan.ranks[1], compute)
    if isinstance(module, nn.Conv2d):
        return factorize_conv_svd(module, plan.ranks[0], compute)
    return factorize_linear(module, plan.ranks[0], compute)


@torch.no_grad()
def low_rank_weight(module: nn.Module, ratio: float, method: str = "auto") -> torch.Tensor | None:
    """The weight (in the layer's own layout) that ``module`` factorised at rank ``ratio`` computes with, or None
    when the factors would not have fewer weights (``factorize`` leaves such a layer as is). Swapping it in gives
    the factorised layer's outputs without building it (sensitivity sweeps, the budget fit)."""
    plan = plan_layer("", module, method, ratio=ratio)
    if not plan.shrinks:
        return None
    w = module.weight.detach()
    if plan.method == "tucker2":
        new = tucker2_weight(*tucker2_factors(w, plan.ranks[0], plan.ranks[1]))
    else:
        first, second, _ = svd_factors(_matrix(module), plan.ranks[0])
        new = second @ first  # (out, in)
        new = new.t() if is_conv1d(module) else new.reshape(w.shape)
    return new.to(w.dtype)


def ratio_for_params(module: nn.Module, fraction: float, method: str = "auto") -> float:
    """The rank ratio whose factors keep at most ``fraction`` of the layer's weights (for ``overrides``)."""
    if layer_method(module, method) == "tucker2":
        return _tucker_ratio(module, fraction)
    plan = plan_layer("", module, method, param_ratio=fraction)
    return plan.ranks[0] / plan.full[0]


# ------------------------------------------------------------------------------------------------ selection
def layer_types(model: nn.Module, method: str = "auto") -> tuple[type[nn.Module], ...]:
    """The module classes ``method`` factorises in ``model`` (its Conv1D class found in the model itself)."""
    conv1d = tuple({type(m) for m in model.modules() if is_conv1d(m)})
    return (nn.Conv2d,) if method == "tucker2" else (nn.Linear, nn.Conv2d) + conv1d


def skip_reason(model: nn.Module, name: str, shared: dict[int, list[str]]) -> str | None:
    """Why a selected layer cannot be factorised (None: it can)."""
    module = model.get_submodule(name)
    parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
    if isinstance(parent, Factorized):
        return "already a low-rank factor"
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        return f"grouped/depthwise conv (groups={module.groups})"
    if isinstance(module, nn.modules.linear.NonDynamicallyQuantizableLinear):
        return "nn.MultiheadAttention reads out_proj.weight directly"
    base = nn.Conv2d if isinstance(module, nn.Conv2d) else nn.Linear if isinstance(module, nn.Linear) else None
    if base is not None and type(module).forward is not base.forward:
        return f"its class {type(module).__name__} has its own forward"
    others = [n for n in shared.get(id(module.weight), []) if n != f"{name}.weight"]
    if others:
        return f"its weight is tied to {others[0]}"
    return None


def shared_parameters(model: nn.Module) -> dict[int, list[str]]:
    """id(parameter) -> every name it is reachable under (more than one: tied)."""
    shared: dict[int, list[str]] = {}
    for pname, p in model.named_parameters(remove_duplicate=False):
        shared.setdefault(id(p), []).append(pname)
    return shared


def factorizable(model: nn.Module, names: list[str]) -> list[str]:
    """The layers of ``names`` that ``factorize`` can replace (no ``skip_reason``)."""
    shared = shared_parameters(model)
    return [n for n in names if skip_reason(model, n, shared) is None]


def _overrides(model: nn.Module, cfg: LowRankConfig, chosen: list[str]) -> dict[str, float]:
    """Layer name -> rank ratio for each ``overrides`` key (exact name or ``re:`` pattern; the first match wins)."""
    out: dict[str, float] = {}
    for key, ratio in cfg.overrides.items():
        check_pattern(key, "overrides")
        hits = [n for n in chosen if (re.fullmatch(key[3:], n) if key.startswith("re:") else n == key)]
        if not hits:
            raise CompressionError(f"overrides: {key!r} matches none of the selected layers: {', '.join(chosen)}")
        for h in hits:
            out.setdefault(h, ratio)
    return out


def plans(model: nn.Module, cfg: LowRankConfig, ctx: StepContext | None = None
          ) -> tuple[list[LayerPlan], dict[str, str]]:
    """(the plan of every layer ``cfg`` factorises, {layer: why it is left as is}) without changing the model."""
    types = layer_types(model, cfg.method)
    modules = dict(model.named_modules())
    for t in cfg.targets or ():
        if not t.startswith("re:") and t in modules and not isinstance(modules[t], types):
            what = "Conv2d" if cfg.method == "tucker2" else "Linear/Conv1D/Conv2d"
            raise CompressionError(f"targets: layer {t!r} is {type(modules[t]).__name__}; method {cfg.method!r} "
                                   f"factorises {what} layers")
    chosen = resolve_targets(model, cfg.targets, cfg.ignore, types, classifier_name(model, ctx), cfg.include_classifier)
    if not chosen:
        raise CompressionError("targets: no Linear/Conv1D/Conv2d layer selected; check targets, ignore and "
                               "include_classifier")
    per_layer = _overrides(model, cfg, chosen)
    shared = shared_parameters(model)
    out, skipped, structural = [], {}, set()
    for name in chosen:
        why = skip_reason(model, name, shared)
        if why is not None:
            skipped[name] = why
            structural.add(name)
            continue
        module = modules[name]
        if name in per_layer:
            plan = plan_layer(name, module, cfg.method, ratio=per_layer[name])
        else:
            plan = plan_layer(name, module, cfg.method, ratio=cfg.rank_ratio, energy=cfg.energy,
                              param_ratio=cfg.param_ratio)
        if plan.shrinks:
            out.append(plan)
        else:
            skipped[name] = f"{plan.describe(named=False)} keeps {plan.after:,} of {plan.before:,} weights"
    if not out:
        why = "; ".join(f"{n}: {r}" for n, r in list(skipped.items())[:4])
        if structural == set(chosen):
            raise CompressionError(f"targets: no selected layer can be factorised ({why}); select other layers")
        sized = set(chosen) - structural
        field = "overrides" if per_layer and set(per_layer) >= sized else cfg.criterion
        raise CompressionError(f"{field}: no selected layer gets fewer weights when factorised ({why}); "
                               "lower the rank or select other layers")
    return out, skipped


def _disable_fused_paths(model: nn.Module, name: str) -> str | None:
    """nn.TransformerEncoderLayer's fused inference path reads ``linear1.weight``/``linear2.weight`` itself: turn it
    off for a layer whose feed-forward Linear was factorised (its Python path computes the same function)."""
    parent_name = name.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    if not isinstance(parent, nn.TransformerEncoderLayer):
        return None
    parent.activation_relu_or_gelu = 0  # only the fused path reads this flag
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoder) and any(layer is parent for layer in m.layers):
            m.use_nested_tensor = False  # the encoder's nested-tensor path reads layers[0].linear1.weight
    return parent_name or "model"


def factorize(model: nn.Module, cfg: LowRankConfig, ctx: StepContext | None = None) -> nn.Module:
    """Apply ``cfg`` to ``model`` in place (the registered handler gets a copy) and return it."""
    layer_plans, skipped = plans(model, cfg, ctx)
    replay = bool(ctx is not None and ctx.replay)
    file_before = None if replay or ctx is None else len(state_dict_bytes(shippable_state_dict(model)))
    fused = set()
    for i, plan in enumerate(layer_plans):
        set_submodule(model, plan.name, build_factors(model.get_submodule(plan.name), plan, compute=not replay))
        parent = _disable_fused_paths(model, plan.name)
        if parent is not None:
            fused.add(parent)
        if ctx is not None:
            ctx.report((i + 1) / len(layer_plans), plan.describe())
    if ctx is not None:
        before = sum(p.before for p in layer_plans)
        after = sum(p.after for p in layer_plans)
        ctx.note(f"factorised {len(layer_plans)} layer(s), {before:,} -> {after:,} weights: "
                 + ", ".join(p.describe() for p in layer_plans))
        if skipped:
            ctx.note("left as is: " + "; ".join(f"{n} ({r})" for n, r in skipped.items()))
        file_after = None if file_before is None else len(state_dict_bytes(shippable_state_dict(model)))
        if file_after is not None and file_after >= file_before:
            ctx.note(f"the file grew from {file_before:,} to {file_after:,} bytes although {before - after:,} "
                     "weights went: each factor is one more tensor in the file, and its framing (hundreds of bytes "
                     "per tensor) outweighs the weights saved in layers this small; leave them out or lower the rank")
        if fused:
            ctx.note(f"{', '.join(sorted(fused))}: nn.TransformerEncoderLayer's fused inference path turned off (it "
                     "reads the dense weights); the layer runs its Python path")
    return model


@register(LowRankConfig)
def _lowrank_step(model: nn.Module, cfg: LowRankConfig, ctx: StepContext) -> nn.Module:
    return factorize(model, cfg, ctx)


__all__ = ["Factorized", "LayerPlan", "LowRankConfig", "RANK_LEVELS", "build_factors", "energy_rank", "factorizable",
           "factorize", "factorize_conv_svd", "factorize_linear", "is_conv1d", "layer_method", "layer_types",
           "low_rank_weight", "plan_layer", "plans", "rank_of", "ratio_for_params", "shared_parameters", "skip_reason",
           "svd_factors", "tucker2_conv", "tucker2_factors", "tucker2_weight"]
