"""Simulated ("fake") quantization at any bit width 2-16, for what-if exploration (Jacob et al. 2018; Gholami
et al. 2021, "A Survey of Quantization Methods for Efficient Neural Network Inference").

Weights are replaced by ``dq(q(w))`` with symmetric per-channel or per-tensor scales, and optionally each layer's
input is fake-quantized per tensor (asymmetric, range calibrated on the calibration split). Storage stays float32,
so these layers report ``simulated=True`` with their bit width and ``measure`` adds the theoretical size
(bits x params / 8) next to the real one. ``overrides`` set bits per layer (mixed precision).
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import CompressionError
from ..technique import StepConfig, StepContext, register, TechniqueUI
from ._common import (affine_params, dequantize_values, fake_quantize_weight, qrange, quantize_values,
                      require_split, resolve_overrides, select_layers, set_submodule)

Bits = Annotated[int, Field(ge=2, le=16)]
FAKE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d, nn.LSTM)


class _FakeQuantMixin:
    """Weight bits, optional activation fake-quant (per-tensor asymmetric), and the simulated layer_stats."""

    bits: int
    activation_bits: int | None

    def _init_quant(self, bits: int, activation_bits: int | None) -> None:
        self.bits, self.activation_bits = bits, activation_bits
        if activation_bits is not None:
            self.register_buffer("act_scale", torch.ones(()))
            self.register_buffer("act_zero_point", torch.zeros(()))

    def _quant_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_bits is None:
            return x
        qmin, qmax = qrange(self.activation_bits, symmetric=False)
        return dequantize_values(quantize_values(x, self.act_scale, self.act_zero_point, qmin, qmax),
                                 self.act_scale, self.act_zero_point)

    def layer_stats(self) -> dict:
        n = self.weight.numel() + (self.bias.numel() if self.bias is not None else 0)
        nz = int((self.weight != 0).sum()) + (int((self.bias != 0).sum()) if self.bias is not None else 0)
        return {"params": n, "nonzero": nz, "dtype": str(self.weight.dtype).replace("torch.", ""),
                "bits": self.bits, "simulated": True}

    def extra_repr(self) -> str:  # type: ignore[override]
        return f"{super().extra_repr()}, bits={self.bits}, activation_bits={self.activation_bits} (simulated)"


class FakeQuantLinear(_FakeQuantMixin, nn.Linear):
    """nn.Linear whose weight holds ``dq(q(w))`` at ``bits`` and whose input may be fake-quantized."""

    def __init__(self, in_features: int, out_features: int, bias: bool, bits: int, activation_bits: int | None):
        nn.Linear.__init__(self, in_features, out_features, bias=bias)
        self._init_quant(bits, activation_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self._quant_input(x), self.weight, self.bias)


class FakeQuantConv2d(_FakeQuantMixin, nn.Conv2d):
    """nn.Conv2d whose weight holds ``dq(q(w))`` at ``bits`` and whose input may be fake-quantized."""

    def __init__(self, conv: nn.Conv2d, bits: int, activation_bits: int | None):
        nn.Conv2d.__init__(self, conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
        self._init_quant(bits, activation_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self._quant_input(x), self.weight, self.bias)


class FakeQuantLSTM(_FakeQuantMixin, nn.LSTM):
    """nn.LSTM whose ``weight_*`` matrices hold ``dq(q(w))`` at ``bits`` (per gate row); the input sequence may be
    fake-quantized. Biases stay float (int32 in real int8 kernels)."""

    def __init__(self, lstm: nn.LSTM, bits: int, activation_bits: int | None):
        nn.LSTM.__init__(self, lstm.input_size, lstm.hidden_size, lstm.num_layers, lstm.bias, lstm.batch_first,
                         lstm.dropout, lstm.bidirectional, lstm.proj_size)
        self._init_quant(bits, activation_bits)

    def forward(self, input, hx=None):  # noqa: A002 (nn.LSTM's signature)
        if isinstance(input, torch.Tensor):
            input = self._quant_input(input)
        return nn.LSTM.forward(self, input, hx)

    def layer_stats(self) -> dict:
        ps = [p.detach() for p in self.parameters()]
        return {"params": sum(p.numel() for p in ps), "nonzero": sum(int((p != 0).sum()) for p in ps),
                "dtype": str(ps[0].dtype).replace("torch.", ""), "bits": self.bits, "simulated": True}


def to_fake_quant(layer: nn.Module, bits: int, per_channel: bool, activation_bits: int | None) -> nn.Module:
    """A FakeQuant copy of a Linear/Conv2d/LSTM with its (effective, mask-applied) weights replaced by dq(q(w))."""
    if isinstance(layer, nn.LSTM):
        new_lstm = FakeQuantLSTM(layer, bits, activation_bits)
        with torch.no_grad():
            for pname, p in new_lstm.named_parameters():
                src = getattr(layer, pname).detach().float()
                p.copy_(fake_quantize_weight(src, bits, per_channel)[0] if pname.startswith("weight") else src)
        return new_lstm
    if isinstance(layer, nn.Linear):
        new: nn.Module = FakeQuantLinear(layer.in_features, layer.out_features, layer.bias is not None, bits,
                                         activation_bits)
    else:
        new = FakeQuantConv2d(layer, bits, activation_bits)
    with torch.no_grad():
        deq, _ = fake_quantize_weight(layer.weight.detach().float(), bits, per_channel)
        new.weight.copy_(deq)
        if layer.bias is not None:
            new.bias.copy_(layer.bias.detach())
    return new


class FakeQuantConfig(StepConfig):
    """Simulated ``bits``-bit weights (and optionally ``activation_bits`` inputs) on the selected layers."""

    kind: Literal["fake_quant"] = "fake_quant"
    ui = TechniqueUI(family="quantize", label="simulated n-bit (fake quant)",
                     layer_types=("Linear", "Conv2d", "LSTM"), storage="simulated", order=10)
    bits: Bits = 8
    weights: Literal["per_channel", "per_tensor"] = "per_channel"
    activation_bits: Bits | None = None
    targets: tuple[str, ...] | None = None
    ignore: tuple[str, ...] = ()
    include_classifier: bool = False
    overrides: dict[str, Bits] = Field(default_factory=dict)  # layer name or re: pattern -> bits


@torch.no_grad()
def _calibrate_inputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(min, max) of each named layer's input over ``x`` (the float model, before fake-quant)."""
    ranges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = []
    for name in names:
        def hook(mod, inp, name=name):
            lo, hi = inp[0].min(), inp[0].max()
            old = ranges.get(name)
            ranges[name] = (lo, hi) if old is None else (torch.minimum(old[0], lo), torch.maximum(old[1], hi))
        hooks.append(model.get_submodule(name).register_forward_pre_hook(hook))
    try:
        was = model.training
        model.eval()
        for i in range(0, len(x), 256):
            model(x[i : i + 256])
        model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return ranges


@register(FakeQuantConfig)
def _fake_quant(model: nn.Module, cfg: FakeQuantConfig, ctx: StepContext) -> nn.Module:
    names = select_layers(model, cfg, ctx, FAKE_TYPES, "fake_quant")
    bits = {n: cfg.bits for n in names}
    bits.update(resolve_overrides(model, cfg.overrides, FAKE_TYPES, "fake_quant"))
    if not bits:
        raise CompressionError("targets: fake_quant selected no Linear/Conv2d layer; name some in targets")
    ranges = {}
    if cfg.activation_bits is not None and not ctx.replay:
        calib = require_split(ctx, "calib", "activation_bits", "fake_quant with activation_bits")
        ranges = _calibrate_inputs(model, list(bits), calib.x)
    for i, (name, b) in enumerate(bits.items()):
        new = to_fake_quant(model.get_submodule(name), b, cfg.weights == "per_channel", cfg.activation_bits)
        if name in ranges:
            scale, zp = affine_params(*ranges[name], cfg.activation_bits)
            new.act_scale.copy_(scale)
            new.act_zero_point.copy_(zp)
        set_submodule(model, name, new)
        ctx.report((i + 1) / len(bits), f"{name}: {b} bits (simulated)")
    return model.eval()
