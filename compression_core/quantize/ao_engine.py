"""torch.ao's quantized engine and configuration: the engine picked per platform, the qconfig shared by eager and
graph mode, and one way to silence torch.ao's deprecation notices.

torch.ao.quantization works on torch 2.13 but is deprecated in favour of torchao, whose CPU int8 paths are slower
here (FACTS.md). Every call to it lives in this package's ``ao_*``, ``fx_tracer``, ``graph_mode``, ``safe_state`` and
``qdq_export`` modules, so a migration touches those files only. The quantized engine is picked per platform:
``x86`` (fbgemm + onednn kernels) on x86 machines, ``qnnpack`` on ARM (Apple laptops fail with "NoQEngine"
otherwise; qnnpack is slower than fp32 on x86).
"""

from __future__ import annotations

import contextlib
import platform
import warnings
from typing import Iterator

import torch
import torch.ao.quantization as _tq


@contextlib.contextmanager
def quiet() -> Iterator[None]:
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


def qconfig(observer: str, weights: str, weight_bits: int, qat: bool = False) -> "_tq.QConfig":
    """Activations: quint8 per tensor (min-max or histogram observer; moving-average min-max under QAT).
    Weights: signed symmetric ``weight_bits`` (per tensor or per output channel) stored as qint8."""
    engine = use_engine()
    reduce = _reduce_range(engine)
    qmax = 2 ** (weight_bits - 1) - 1
    # below 8 bits the grid is symmetric [-qmax, qmax] (scale = max|w| / qmax): graph-mode lowering quantizes
    # weights without clamping to the observer's range, and [-2^(b-1), qmax] would round max|w| to 2^(b-1)
    qmin = -(qmax + 1) if weight_bits == 8 else -qmax
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


def run_quiet(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` with torch.ao's deprecation warnings silenced (forward passes through observers)."""
    with quiet():
        return fn(*args, **kwargs)


__all__ = ["pick_engine", "qconfig", "quiet", "run_quiet", "use_engine"]
