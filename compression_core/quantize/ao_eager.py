"""Eager-mode torch.ao: dynamic int8 (Linear/LSTM/GRU swapped for torch's int8 modules) and the per-layer
quant/dequant wrappers static int8 falls back to where a model cannot be traced; a dynamic int8 module back to the
float module it computes like (what ONNX Runtime's dynamic int8 then quantizes again)."""

from __future__ import annotations

import torch
from torch import nn

import torch.ao.nn.quantized.dynamic as _nnqd
import torch.ao.quantization as _tq

from .ao_engine import quiet, use_engine
from .safe_state import compact_scalars, rnn_weights

QuantStub = _tq.QuantStub
DeQuantStub = _tq.DeQuantStub
QuantWrapper = _tq.QuantWrapper


# ------------------------------------------------------------------------------------------------- dynamic
class FullRangeDynamicLinear(_nnqd.Linear):
    """torch's dynamic int8 Linear with 8-bit activations: ``linear_dynamic(..., reduce_range=False)``.

    torch's own module quantizes activations to 7 bits (``reduce_range=True``), because fbgemm's AVX2 kernels sum
    pairs of uint8 x int8 products in int16 and can saturate. With int8 dot-product instructions (AVX-512 VNNI,
    AMX, ARM dotprod) the products accumulate straight into int32, so the full 8-bit range is safe and one bit more
    accurate. Same state as ``torch.ao.nn.quantized.dynamic.Linear``; only ``forward`` differs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed_params.dtype != torch.qint8:
            return super().forward(x)
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False).to(x.dtype)


def quantize_dynamic(model: nn.Module, names: list[str], per_channel: bool = False,
                     full_range: bool = False) -> nn.Module:
    """Dynamic int8 (weights int8, activations quantized per batch at run time) of the named Linear/LSTM layers,
    in place on ``model`` (the caller passes a copy). ``per_channel``: one weight scale per output channel of a
    Linear (recurrent layers keep per-tensor scales); ``full_range``: 8-bit activations (``FullRangeDynamicLinear``:
    only where the CPU has int8 dot-product instructions)."""
    use_engine()
    spec = {name: _tq.per_channel_dynamic_qconfig if per_channel and isinstance(model.get_submodule(name), nn.Linear)
            else _tq.default_dynamic_qconfig for name in names}
    with quiet():
        out = _tq.quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8, inplace=True)
    if full_range:
        for m in out.modules():
            if type(m) is _nnqd.Linear:
                m.__class__ = FullRangeDynamicLinear
    return out


def fuse(model: nn.Module, groups: list[list[str]], qat: bool) -> nn.Module:
    """Fuse conv-BN(-ReLU) / linear-ReLU groups in place (BN folded; QAT keeps BN for training)."""
    if not groups:
        return model
    with quiet():
        if qat:
            return _tq.fuse_modules_qat(model, groups, inplace=True)
        return _tq.fuse_modules(model, groups, inplace=True)


def prepare(model: nn.Module, qat: bool) -> nn.Module:
    """Insert observers (PTQ, eval mode) or fake-quant modules (QAT, train mode) where ``qconfig`` is set."""
    with quiet():
        if qat:
            return _tq.prepare_qat(model.train(), inplace=True)
        return _tq.prepare(model.eval(), inplace=True)


def convert(model: nn.Module) -> nn.Module:
    """Swap observed modules for real int8 modules using the observed ranges (in place, eval mode); the scales and
    zero points are saved as one vector (``compact_scalars``)."""
    with quiet():
        return compact_scalars(_tq.convert(model.eval(), inplace=True))


# ------------------------------------------------------------------------------------- dynamic int8 back to float
def is_dynamic_module(module: nn.Module) -> bool:
    """A dynamic int8 module of torch.ao (Linear, LSTM, GRU)."""
    return isinstance(module, (_nnqd.Linear, _nnqd.modules.rnn.RNNBase))


def dequantized_float(module: nn.Module) -> nn.Module:
    """The float module a dynamic int8 module computes like: its int8 weights dequantized (what ONNX Runtime's
    dynamic int8 then quantizes again, per channel)."""
    with quiet(), torch.no_grad():
        if isinstance(module, _nnqd.Linear):
            w, b = module.weight(), module.bias()
            lin = nn.Linear(module.in_features, module.out_features, bias=b is not None)
            lin.weight.copy_(w.dequantize() if w.is_quantized else w)
            if b is not None:
                lin.bias.copy_(b)
            return lin.eval()
        if isinstance(module, _nnqd.modules.rnn.RNNBase):
            cls = {"LSTM": nn.LSTM, "GRU": nn.GRU}[module.mode]
            rnn = cls(module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first,
                      float(module.dropout), module.bidirectional)
            for name, t in rnn_weights(module).items():
                getattr(rnn, name).copy_(t.dequantize() if t.is_quantized else t)
            return rnn.eval()
    raise TypeError(f"{type(module).__name__} is not a dynamic int8 module")


__all__ = ["DeQuantStub", "QuantStub", "QuantWrapper", "convert", "dequantized_float", "fuse", "is_dynamic_module",
           "prepare", "quantize_dynamic"]
