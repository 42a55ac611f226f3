"""Simulated ("fake") quantization at any bit width 2-16, for what-if exploration (Jacob et al. 2018; Gholami
et al. 2021, "A Survey of Quantization Methods for Efficient Neural Network Inference").

Weights read as ``dq(q(w))`` with symmetric per-channel or per-tensor scales, and optionally each layer's input is
fake-quantized per tensor (asymmetric, range calibrated on the calibration split). Nothing is swapped: each layer
keeps its class and its own ``forward`` (a Conv2d subclass that pads in ``forward`` still pads); its weight is wrapped
(``FakeQuantWeight``: float original kept, quantized weight computed before each forward) and its input by a
forward pre-hook. Storage stays float32,
so these layers report ``simulated=True`` with their bit width and ``measure`` adds the theoretical size
(bits x params / 8) next to the real one. ``overrides`` set bits per layer (mixed precision).
"""

from __future__ import annotations

import functools
import types
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn

from ..errors import CompressionError
from ..technique import StepConfig, StepContext, register, TechniqueUI
from .. import inputs as I
from ..io import fold_masks, has_mask
from ..linear_like import is_conv1d
from ._common import (affine_params, dequantize_values, fake_quantize_weight, qrange, quantize_values,
                      require_split, resolve_overrides, select_layers)

Bits = Annotated[int, Field(ge=2, le=16)]
FAKE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.LSTM, nn.GRU)


class FakeQuantWeight:
    """The wrapper of one fake-quantized weight: the float original stays a Parameter ``<name>_orig`` and, before
    every forward, ``<name>`` is set to ``dq(q(<name>_orig))`` (symmetric ``bits``-bit codes, one scale per output
    channel or per tensor), the reparametrisation ``torch.nn.utils.prune`` uses for masks. The layer keeps its class
    and its own ``forward``: a Conv2d subclass that pads in ``forward`` still pads. Gradients pass straight through
    to the original (Bengio et al. 2013), so a fine-tune after it trains the float weights quantization-aware.

    (``torch.nn.utils.parametrize`` would do the same, but it adds a ``parametrizations`` child per layer that
    ``measure`` counts as a second layer holding the same weight.)"""

    def __init__(self, name: str, bits: int, per_channel: bool, transposed: bool = False) -> None:
        self._tensor_name = name  # the attribute name torch.nn.utils.prune's hooks use; clone_model relies on it
        self.bits, self.per_channel = bits, per_channel
        self.transposed = transposed  # transformers' Conv1D: weight (in, out), one scale per output = per column

    def compute(self, module: nn.Module) -> torch.Tensor:
        w = getattr(module, self._tensor_name + "_orig")
        wf = w.detach().float()
        if getattr(self, "transposed", False):
            deq = fake_quantize_weight(wf.t(), self.bits, self.per_channel)[0].t().to(w.dtype)
        else:
            deq = fake_quantize_weight(wf, self.bits, self.per_channel)[0].to(w.dtype)
        if torch.is_grad_enabled() and w.requires_grad:
            return w + (deq - w).detach()  # straight-through estimator
        return deq

    def __call__(self, module: nn.Module, args: tuple) -> None:
        """Before a forward: ``<name>`` = dq(q(original)). Without a gradient to pass, the weight computed before
        is kept while the original is the same tensor, unchanged since (its version counter): rounding every
        weight again on each forward cost a 110 M parameter model ~0.5-1 s per forward (72 Linear weights)."""
        w = getattr(module, self._tensor_name + "_orig")
        cur = module.__dict__.get(self._tensor_name)
        src = getattr(self, "_source", None)
        if (src is not None and src[0] is w and src[1] == (w._version, w.data_ptr()) and src[2] is cur
                and not (torch.is_grad_enabled() and w.requires_grad)):
            return
        out = self.compute(module)
        setattr(module, self._tensor_name, out)
        self._source = None if out.requires_grad else (w, (w._version, w.data_ptr()), out)

    def rebind(self, module: nn.Module) -> None:
        """The original was swapped for an EQUAL tensor (the layer cache points a compressed layer's tensors that
        equal its input's at those, ``layer_cache._share_unchanged``): the rounded weight computed before stays."""
        src = getattr(self, "_source", None)
        w = getattr(module, self._tensor_name + "_orig")
        if src is not None and src[2] is module.__dict__.get(self._tensor_name):
            self._source = (w, (w._version, w.data_ptr()), src[2])

    def reload(self, module: nn.Module, incompatible_keys) -> None:
        """After ``load_state_dict``: the weight follows the loaded original at once (not at the next forward)."""
        with torch.no_grad():
            self(module, ())

    @staticmethod
    def wrap(module: nn.Module, name: str, bits: int, per_channel: bool) -> "FakeQuantWeight":
        hook = FakeQuantWeight(name, bits, per_channel, transposed=is_conv1d(module))
        original = module._parameters.pop(name)
        module.register_parameter(name + "_orig", original)
        with torch.no_grad():
            hook(module, ())
        module.register_forward_pre_hook(hook)
        module.register_load_state_dict_post_hook(hook.reload)
        return hook


def _quant_input(module: nn.Module, args: tuple, bits: int) -> tuple:
    """Forward pre-hook: the layer's first input fake-quantized per tensor (asymmetric, calibrated range)."""
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        return args
    qmin, qmax = qrange(bits, symmetric=False)
    x = args[0]
    xq = dequantize_values(quantize_values(x, module.act_scale, module.act_zero_point, qmin, qmax),
                           module.act_scale, module.act_zero_point).to(x.dtype)
    return (xq, *args[1:])


def _weight_names(layer: nn.Module) -> list[str]:
    if isinstance(layer, nn.RNNBase):
        return [n for n, _ in layer.named_parameters(recurse=False) if n.startswith("weight")]
    return ["weight"]


def _simulated_stats(self: nn.Module) -> dict:
    """``measure.layer_stats`` of a fake-quantized layer: its parameters at the simulated bit width."""
    hooks = {h._tensor_name: h for h in self._forward_pre_hooks.values() if isinstance(h, FakeQuantWeight)}
    with torch.no_grad():
        ps = [hooks[n].compute(self) if n in hooks else getattr(self, n).detach() for n in _weight_names(self)]
    ps += [p.detach() for n, p in self.named_parameters(recurse=False) if n.startswith("bias")]
    return {"params": sum(p.numel() for p in ps), "nonzero": sum(int((p != 0).sum()) for p in ps),
            "dtype": str(ps[0].dtype).replace("torch.", ""), "bits": self.fake_quant_bits, "simulated": True}


def wrap_fake_quant(layer: nn.Module, bits: int, per_channel: bool, activation_bits: int | None) -> nn.Module:
    """Fake-quantize ``layer`` in place without changing its class or what its ``forward`` does: its weight is
    wrapped by ``FakeQuantWeight`` (Linear, Conv and any subclass with its own forward), and with
    ``activation_bits`` a forward pre-hook fake-quantizes its input (scale buffers ``act_scale`` /
    ``act_zero_point``, set by calibration). LSTM/GRU weights are rounded in place instead: an RNN caches its flat
    weights, which a parametrization would leave stale."""
    if isinstance(layer, nn.RNNBase):
        with torch.no_grad():
            for name in _weight_names(layer):
                w = getattr(layer, name)
                w.copy_(fake_quantize_weight(w.detach().float(), bits, per_channel)[0].to(w.dtype))
    else:
        FakeQuantWeight.wrap(layer, "weight", bits, per_channel)
    layer.fake_quant_bits = bits
    layer.layer_stats = types.MethodType(_simulated_stats, layer)
    if activation_bits is not None:
        layer.register_buffer("act_scale", torch.ones(()))
        layer.register_buffer("act_zero_point", torch.zeros(()))
        layer.register_forward_pre_hook(functools.partial(_quant_input, bits=activation_bits))
    return layer


class FakeQuantConfig(StepConfig):
    """Simulated ``bits``-bit weights (and optionally ``activation_bits`` inputs) on the selected layers."""

    kind: Literal["fake_quant"] = "fake_quant"
    ui = TechniqueUI(family="quantize", label="simulated n-bit (fake quant)",
                     layer_types=("Linear", "Conv1D", "Conv2d", "LSTM"), storage="simulated", order=10)
    bits: Bits = 8
    weights: Literal["per_channel", "per_tensor"] = "per_channel"
    activation_bits: Bits | None = None
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    include_classifier: bool = False
    overrides: dict[str, Bits] = Field(default_factory=dict)  # layer name or re: pattern -> bits

    def per_layer(self, model: nn.Module, ctx: StepContext) -> dict[str, "FakeQuantConfig"] | None:
        """Per layer (see ``StepConfig.per_layer``) for weights only: each layer's codes come from its own weight.
        Activation bits calibrate on data through the whole model, an LSTM/GRU is rounded in place, a pruned layer
        the step does not select is still folded by it, and a model in training mode is put in eval mode by it:
        those are whole-model steps."""
        if self.activation_bits is not None or any(m.training for m in model.modules()):
            return None  # (the step also puts the whole model in eval mode)
        bits = _bits_per_layer(model, self, ctx)
        chosen = [model.get_submodule(n) for n in bits]
        if any(isinstance(m, nn.RNNBase) for m in chosen):
            return None
        if any(has_mask(m, h._tensor_name) for m in model.modules() if all(m is not c for c in chosen)
               for h in m._forward_pre_hooks.values() if getattr(h, "_tensor_name", None)):
            return None
        return {n: self.model_copy(update={"bits": b, "targets": (n,), "ignore": (), "overrides": {},
                                           "include_classifier": True}) for n, b in bits.items()}


@torch.no_grad()
def _calibrate_inputs(model: nn.Module, names: list[str], x) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(min, max) of each named layer's first input over ``x`` (the float model, before fake-quant)."""
    ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = []
    for name in names:
        def hook(mod, inp, name=name):
            if not inp or not isinstance(inp[0], torch.Tensor) or not inp[0].is_floating_point():
                return
            lo, hi = inp[0].min(), inp[0].max()
            old = ranges.get(name)
            ranges[name] = (lo, hi) if old is None else (torch.minimum(old[0], lo), torch.maximum(old[1], hi))
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        was = model.training
        model.eval()
        n = I.n_items(x)
        for i in range(0, n, 256):
            I.call(model, I.take(x, slice(i, i + 256)))
        model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return ranges


def _bits_per_layer(model: nn.Module, cfg: FakeQuantConfig, ctx: StepContext) -> dict[str, int]:
    """Layer name -> bits: the selected layers at ``cfg.bits``, then ``cfg.overrides`` (which may add layers)."""
    names = select_layers(model, cfg, ctx, FAKE_TYPES, "fake_quant")
    bits = {n: cfg.bits for n in names}
    bits.update(resolve_overrides(model, cfg.overrides, FAKE_TYPES, "fake_quant"))
    if not bits:
        raise CompressionError("targets: fake_quant selected no Linear/Conv1D/Conv2d layer; name some in targets")
    return bits


@register(FakeQuantConfig)
def _fake_quant(model: nn.Module, cfg: FakeQuantConfig, ctx: StepContext) -> nn.Module:
    fold_masks(model)  # a pruned model: simulate its effective (zeroed) weights
    bits = _bits_per_layer(model, cfg, ctx)
    ranges = {}
    if cfg.activation_bits is not None and not ctx.replay:
        calib = require_split(ctx, "calib", "activation_bits", "fake_quant with activation_bits")
        ranges = _calibrate_inputs(model, list(bits), calib.x)
    for i, (name, b) in enumerate(bits.items()):
        layer = wrap_fake_quant(model.get_submodule(name), b, cfg.weights == "per_channel", cfg.activation_bits)
        if cfg.activation_bits is not None and name in ranges:
            scale, zp = affine_params(*ranges[name], cfg.activation_bits)
            layer.act_scale.copy_(scale.reshape(()))
            layer.act_zero_point.copy_(zp.reshape(()))
        ctx.report((i + 1) / len(bits), f"{name}: {b} bits (simulated)")
    return model.eval()
