"""The one adapter over ``torch.ao.quantization`` (eager mode: dynamic, static PTQ, QAT).

torch.ao.quantization works on torch 2.13 but is deprecated in favour of torchao, whose CPU int8 paths are slower
here (FACTS.md). Every call to it lives in this module, so a migration touches one file. The quantized engine is
picked per platform: ``x86`` (fbgemm + onednn kernels) on x86 machines, ``qnnpack`` on ARM (Apple laptops fail
with "NoQEngine" otherwise; qnnpack is slower than fp32 on x86).
"""

from __future__ import annotations

import contextlib
import platform
import warnings
from collections import OrderedDict
from typing import Iterator

import torch
from torch import nn

import torch.ao.nn.quantized.dynamic as _nnqd
import torch.ao.quantization as _tq

QuantStub = _tq.QuantStub
DeQuantStub = _tq.DeQuantStub
QuantWrapper = _tq.QuantWrapper


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.ao's deprecation notices and its uncalibrated-observer warning (replay builds structure only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", message=r".*must run observer before calling calculate_qparams.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated.*")
        yield


def pick_engine() -> str:
    """The fast quantized engine for this platform: x86 on x86-64, qnnpack on ARM, else the first supported."""
    supported = torch.backends.quantized.supported_engines
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64") or machine.startswith("arm"):
        wanted = ["qnnpack"]
    else:
        wanted = ["x86", "fbgemm", "onednn"]
    for name in wanted + [e for e in supported if e != "none"]:
        if name in supported:
            return name
    raise RuntimeError(f"no quantized engine available (supported: {supported})")


def use_engine() -> str:
    """Select the platform's engine for packing and running int8 modules; returns its name."""
    name = pick_engine()
    if torch.backends.quantized.engine != name:
        torch.backends.quantized.engine = name
    return name


def _reduce_range(engine: str) -> bool:
    """fbgemm-style kernels (x86, fbgemm) need 7-bit activations to avoid int16 overflow without VNNI."""
    return engine in ("x86", "fbgemm")


# ------------------------------------------------------------------------------------------------- dynamic
def quantize_dynamic(model: nn.Module, names: list[str]) -> nn.Module:
    """Dynamic int8 (weights int8, activations quantized per batch at run time) of the named Linear/LSTM layers,
    in place on ``model`` (the caller passes a copy)."""
    use_engine()
    spec = {name: _tq.default_dynamic_qconfig for name in names}
    with _quiet():
        return _tq.quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8, inplace=True)


def torch_quantize_dynamic(model: nn.Module, types: set[type[nn.Module]]) -> nn.Module:
    """torch's own ``quantize_dynamic`` by module types on a copy: the oracle the tests compare against."""
    use_engine()
    with _quiet():
        return _tq.quantize_dynamic(model, types, dtype=torch.qint8, inplace=False)


# ------------------------------------------------------------------------------------------- static / QAT
def qconfig(observer: str, weights: str, weight_bits: int, qat: bool = False) -> "_tq.QConfig":
    """Activations: quint8 per tensor (min-max or histogram observer; moving-average min-max under QAT).
    Weights: signed symmetric ``weight_bits`` (per tensor or per output channel) stored as qint8."""
    engine = use_engine()
    reduce = _reduce_range(engine)
    qmin, qmax = -(2 ** (weight_bits - 1)), 2 ** (weight_bits - 1) - 1
    per_channel = weights == "per_channel"
    if qat:
        act = _tq.FakeQuantize.with_args(observer=_tq.MovingAverageMinMaxObserver, quant_min=0,
                                         quant_max=127 if reduce else 255, dtype=torch.quint8,
                                         qscheme=torch.per_tensor_affine)
        wobs = _tq.MovingAveragePerChannelMinMaxObserver if per_channel else _tq.MovingAverageMinMaxObserver
        weight = _tq.FakeQuantize.with_args(
            observer=wobs, quant_min=qmin, quant_max=qmax, dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric)
        return _tq.QConfig(activation=act, weight=weight)
    obs = _tq.HistogramObserver if observer == "histogram" else _tq.MinMaxObserver
    act = obs.with_args(dtype=torch.quint8, quant_min=0, quant_max=127 if reduce else 255)
    if per_channel:
        weight = _tq.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                        quant_min=qmin, quant_max=qmax)
    else:
        weight = _tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                              quant_min=qmin, quant_max=qmax)
    return _tq.QConfig(activation=act, weight=weight)


def fuse(model: nn.Module, groups: list[list[str]], qat: bool) -> nn.Module:
    """Fuse conv-BN(-ReLU) / linear-ReLU groups in place (BN folded; QAT keeps BN for training)."""
    if not groups:
        return model
    with _quiet():
        if qat:
            return _tq.fuse_modules_qat(model, groups, inplace=True)
        return _tq.fuse_modules(model, groups, inplace=True)


def prepare(model: nn.Module, qat: bool) -> nn.Module:
    """Insert observers (PTQ, eval mode) or fake-quant modules (QAT, train mode) where ``qconfig`` is set."""
    with _quiet():
        if qat:
            return _tq.prepare_qat(model.train(), inplace=True)
        return _tq.prepare(model.eval(), inplace=True)


def convert(model: nn.Module) -> nn.Module:
    """Swap observed modules for real int8 modules using the observed ranges (in place, eval mode)."""
    with _quiet():
        return _tq.convert(model.eval(), inplace=True)


def run_quiet(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` with torch.ao's deprecation warnings silenced (forward passes through observers)."""
    with _quiet():
        return fn(*args, **kwargs)


# --------------------------------------------------------------------------------------- safe serialisation
def _dynamic_rnns(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _nnqd.modules.rnn.RNNBase)]


def is_dynamic_rnn(module: nn.Module) -> bool:
    return isinstance(module, _nnqd.modules.rnn.RNNBase)


def rnn_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """The int8 weights and float biases packed inside a dynamically quantized LSTM/GRU, by torch's names."""
    with _quiet():
        wb = module._weight_bias()
    return {**wb["weight"], **wb["bias"]}


def safe_state_dict(model: nn.Module, state: dict | None = None) -> dict:
    """``model.state_dict()`` (or the given ``state`` of ``model``) with the packed TorchScript objects of dynamic LSTMs replaced by their tensors.

    Dynamic quantized LSTM/GRU state holds ``torch.ScriptObject`` packed params, which ``torch.load(...,
    weights_only=True)`` refuses; its int8 weights and biases are saved as plain (quantized) tensors instead under
    ``<lstm>._weight_bias.<name>`` and repacked by ``load_safe_state_dict``. Other modules' state is unchanged
    (quantized Linear/Conv state is tensors and tuples, which load with weights_only=True).
    """
    state = model.state_dict() if state is None else state
    for name, rnn in _dynamic_rnns(model):
        prefix = f"{name}." if name else ""
        for key in [k for k in state if k.startswith(prefix + "_all_weight_values.")]:
            del state[key]
        for wname, t in rnn_weights(rnn).items():
            state[f"{prefix}_weight_bias.{wname}"] = t
    return state


def load_safe_state_dict(model: nn.Module, state: dict) -> nn.Module:
    """Load a ``safe_state_dict`` into a model of the same structure (strict), repacking dynamic LSTM weights."""
    meta = getattr(state, "_metadata", None)  # module versions: quantized modules' loaders depend on them
    state = OrderedDict(state)
    if meta is not None:
        state._metadata = meta  # type: ignore[attr-defined]
    for name, rnn in _dynamic_rnns(model):
        prefix = f"{name}." if name else ""
        tag = prefix + "_weight_bias."
        mine = {k[len(tag):]: state.pop(k) for k in [k for k in state if k.startswith(tag)]}
        if mine:
            with _quiet():
                rnn.set_weight_bias(mine)
        current = rnn.state_dict()
        for k, v in current.items():
            if k.startswith("_all_weight_values."):
                state[prefix + k] = v
    model.load_state_dict(state)
    return model
