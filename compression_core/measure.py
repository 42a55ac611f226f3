"""Honest measurement: typed ModelStats with size (serialized bytes), latency (torch.utils.benchmark, warm-up,
median), accuracy, FLOPs (torch.utils.flop_counter, corrected where it is wrong) and a per-layer table.

A module may describe itself by defining ``layer_stats() -> dict`` with keys ``params, nonzero, dtype, bits``
(and optionally ``simulated``); packed or simulated layers of the quantize family do this.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import inputs as I
from .inputs import predict  # defined with the other batch helpers; measure's public name
from .io import shippable_state_dict
from .cost_layout import saved_size
from .peak_ram import peak_ram
from .extra_metrics import compute
from .errors import CompressionError
from .sparse import sparse_size_bytes

_DTYPE_BITS = {
    torch.float32: 32, torch.float64: 64, torch.float16: 16, torch.bfloat16: 16,
    torch.qint8: 8, torch.quint8: 8, torch.int8: 8, torch.uint8: 8, torch.qint32: 32, torch.int32: 32,
}


class LayerStats(BaseModel):
    """One layer's weights: how many, how many non-zero, stored as what."""

    model_config = ConfigDict(frozen=True)
    name: str
    type: str
    params: int
    nonzero: int
    sparsity: float
    dtype: str
    bits: int
    simulated: bool = False


class ModelStats(BaseModel):
    """Everything measured about one model. Sizes are bytes of the serialized artefact (``torch.save`` of the
    state_dict a user would ship); latency is the median over many timed runs after warm-up."""

    model_config = ConfigDict(frozen=True)
    model: str
    runtime: str = "torch"  # what ran it: "torch" or "onnxruntime" (compression_core.ort)
    params: int
    nonzero_params: int
    size_bytes: int
    sparse_size_bytes: int | None = None
    theoretical_size_bytes: int | None = None
    simulated: bool = False
    latency_ms: float | None
    latency_iqr_ms: float | None = None
    latency_runs: int | None = None
    batch_size: int
    threads: int
    accuracy: float  # the workload's metric (``metric`` names it; top-1 accuracy by default)
    metric: str = "accuracy"
    higher_is_better: bool = True  # the metric's direction (False: perplexity, a loss)
    metric_percent: bool = True  # the metric is a fraction shown in % (False: shown as the number, e.g. perplexity)
    extra: dict[str, float] = {}  # the workload's secondary metrics (e.g. fidelity), from info["extra_metrics"]
    flops: int
    nonzero_flops: int
    layers: list[LayerStats]
    # peak inference RAM (weights as held in memory + input + live activations; compression_core.peak_ram) at
    # ``batch_size`` and at batch 1; None when not measured
    peak_ram_bytes: int | None = None
    peak_ram_bytes_b1: int | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def metric_text(self, value: float | None = None) -> str:
        """The metric (``value``, default this model's) as a person reads it: ``97.78 %`` or ``23.41``."""
        v = self.accuracy if value is None else value
        return f"{v * 100:.2f} %" if self.metric_percent else f"{v:.4g}"


# ----------------------------------------------------------------------------------------------- accuracy
def accuracy(model: nn.Module, x: Any, y: torch.Tensor) -> float:
    """Fraction of ``x`` classified as ``y``."""
    if len(y) == 0:
        return 0.0
    return int((predict(model, x).argmax(-1) == y).sum()) / len(y)


def evaluate(model: nn.Module, data: Any, split: str = "test") -> float:
    """The data's metric (a Workload's; top-1 accuracy for plain splits) of ``model`` on ``split``."""
    s = getattr(data, split)
    metric = getattr(data, "metric", None)
    if metric is None or not callable(metric):
        return accuracy(model, s.x, s.y)
    return float(metric(predict(model, s.x), s.y))


def confusion_matrix(model: nn.Module, x: Any, y: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) counts: row = true class, column = predicted class."""
    return confusion_from_outputs(predict(model, x), y, classes)


def confusion_from_outputs(out: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """(classes, classes) counts from a model's outputs (N, classes): row = true class, column = predicted class."""
    pred = out.argmax(-1)
    return torch.bincount(y * classes + pred, minlength=classes * classes).reshape(classes, classes)


_input_dtype = I.input_dtype


# --------------------------------------------------------------------------------------------------- size
def size_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(state_dict)`` with pruning masks folded in: the dense file a user would ship. Computed
    from the pickle and the storages' sizes (``cost_layout.saved_size``, exact, checked against a real save at first
    use), so no copy of the weights is written to get it."""
    return saved_size(shippable_state_dict(model))


# ------------------------------------------------------------------------------------------------ latency
@torch.no_grad()
def latency(
    model: nn.Module, example: Any, threads: int = 1, min_run_time: float = 0.3, warmup: int = 10
) -> tuple[float, float, int]:
    """(median ms, IQR ms, runs) of one forward pass on ``example`` with ``threads`` intra-op threads."""
    from torch.utils import benchmark  # lazy: ~0.3 s to import, and only timing needs it

    model.eval()
    args, kwargs = I.example_args(I.cast_floats(example, _input_dtype(model)))
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for _ in range(warmup):
            model(*args, **kwargs)
        timer = benchmark.Timer(stmt="model(*args, **kwargs)", globals={"model": model, "args": args, "kwargs": kwargs},
                                num_threads=threads)
        m = timer.blocked_autorange(min_run_time=min_run_time)
    finally:
        torch.set_num_threads(old_threads)
    return m.median * 1e3, m.iqr * 1e3, len(m.times) * m.number_per_run


# -------------------------------------------------------------------------------------------------- FLOPs
def effective_weight(module: nn.Module) -> torch.Tensor | None:
    """The float weight a layer computes with, detached (prune masks applied, quantized weights dequantized), or None.

    One accessor for FLOP counting, the dashboard's histograms and anyone inspecting a compressed layer: a module's
    own ``dequantized_weight()`` (packed int4) wins; then ``weight`` as a tensor (torch.nn.utils.prune leaves the
    masked product there) or torch.ao's quantized ``weight()`` method, dequantized.
    """
    own = getattr(module, "dequantized_weight", None)
    if callable(own):
        return own().detach()
    w = getattr(module, "weight", None)
    if callable(w) and not isinstance(w, torch.Tensor):  # torch.ao quantized modules: weight() method
        try:
            w = w()
        except Exception:
            return None
    if isinstance(w, torch.Tensor):
        return (w.dequantize() if w.is_quantized else w).detach()
    return None


def _formula_flops(module: nn.Module, out: torch.Tensor) -> int:
    """Dense multiply-add FLOPs (2 per MAC) of a Linear- or Conv-like layer for one call."""
    w = effective_weight(module)
    if w is None or not isinstance(out, torch.Tensor) or hasattr(module, "num_embeddings"):
        return 0  # an embedding (float or int8) looks rows up: no multiply-adds
    if w.dim() == 2:  # Linear: every output element costs in_features MACs
        return 2 * out.numel() * w.shape[1]
    if w.dim() == 4:  # Conv2d: every output element costs (Cin/groups)*kh*kw MACs
        return 2 * out.numel() * w.shape[1] * w.shape[2] * w.shape[3]
    return 0


def _is_recurrent(module: nn.Module) -> bool:
    """nn.LSTM/GRU and their dynamically quantized versions (they keep ``input_size``/``hidden_size``/``mode``)."""
    return all(hasattr(module, a) for a in ("input_size", "hidden_size", "num_layers", "mode"))


def _recurrent_flops(module: nn.Module, inp: tuple, out) -> int:
    """2 x MACs of the gate matmuls: per step and layer, gates x hidden x (layer input + hidden)."""
    x = inp[0]
    if not isinstance(x, torch.Tensor):  # packed sequence
        x = x.data
    steps = x.shape[0] * (x.shape[1] if x.dim() == 3 else 1)  # batch x time (any order)
    gates = {"LSTM": 4, "GRU": 3}.get(str(module.mode), 1)
    dirs = 2 if module.bidirectional else 1
    h, total = module.hidden_size, 0
    for layer in range(module.num_layers):
        layer_in = module.input_size if layer == 0 else h * dirs
        total += dirs * gates * h * (layer_in + h)
    return 2 * steps * total


@contextmanager
def counting_flops(model: nn.Module) -> Iterator[tuple[FlopCounterMode, dict[str, int]]]:
    """``FlopCounterMode`` around the caller's forward of ``model``, with {module name: the FLOPs it counted while
    that module ran in THIS thread} (its children included; "" is the whole model). FlopCounterMode's own per-module
    table is filled by process-wide module hooks that name modules by class, so a forward another thread runs at the
    same time (a live server's stage thread, a warm-up) is attributed to it too; its op counts are this thread's
    alone, and so are these."""
    me = threading.get_ident()
    counted: dict[str, int] = {}
    hooks = []
    with FlopCounterMode(display=False) as mode:
        for name, module in model.named_modules():
            starts: list[int] = []

            def pre(mod, args, starts=starts):
                if threading.get_ident() == me:
                    starts.append(mode.get_total_flops())

            def post(mod, args, output, name=name, starts=starts):
                if threading.get_ident() == me and starts:
                    counted[name] = counted.get(name, 0) + mode.get_total_flops() - starts.pop()

            hooks.append(module.register_forward_pre_hook(pre))
            hooks.append(module.register_forward_hook(post))
        try:
            yield mode, counted
        finally:
            for h in hooks:
                h.remove()


@torch.no_grad()
def flops(model: nn.Module, example: Any) -> tuple[int, int]:
    """(FLOPs as executed, FLOPs if zero weights were skipped) for one forward pass on ``example``.

    torch.utils.flop_counter is exact for dense float layers but counts 0 for quantized modules and the dense
    count for masked weights (FACTS.md); so Linear/Conv layers it missed get a formula count, and the non-zero
    count scales each layer by its weight density.
    """
    model.eval()
    args, kwargs = I.example_args(I.cast_floats(example, _input_dtype(model)))
    per_layer: dict[str, tuple[int, float]] = {}
    me = threading.get_ident()  # the hooks count this thread's forward only (another may run the same modules)
    hooks = []
    for name, module in model.named_modules():
        own = effective_weight(module) is not None
        if own and not any(effective_weight(c) is not None for c in module.children()):
            def hook(mod, inp, out, name=name):
                if threading.get_ident() != me:
                    return
                w = effective_weight(mod)
                density = float((w != 0).sum()) / max(w.numel(), 1)
                f, _ = per_layer.get(name, (0, density))
                per_layer[name] = (f + _formula_flops(mod, out), density)
            hooks.append(module.register_forward_hook(hook))
        elif _is_recurrent(module):  # torch.utils.flop_counter does not count aten.lstm
            def rhook(mod, inp, out, name=name):
                if threading.get_ident() != me:
                    return
                tensors = [t for n, t in mod.named_parameters() if n.startswith("weight")] if hasattr(mod, "weight_ih_l0") else []
                density = (sum(float((t != 0).sum()) for t in tensors) / max(sum(t.numel() for t in tensors), 1)
                           if tensors else 1.0)
                per_layer[name] = (per_layer.get(name, (0, density))[0] + _recurrent_flops(mod, inp, out), density)
            hooks.append(module.register_forward_hook(rhook))
    try:
        with counting_flops(model) as (mode, counted):
            model(*args, **kwargs)
    finally:
        for h in hooks:
            h.remove()
    total = int(mode.get_total_flops())
    nonzero = total
    for name, (f, density) in per_layer.items():
        seen = counted.get(name, 0)
        if seen == 0:
            total += f
            nonzero += f
        nonzero -= int(round(f * (1.0 - density)))
    return total, nonzero


# ----------------------------------------------------------------------------------------------- layers
def _tensor_bits(t: torch.Tensor) -> int:
    return _DTYPE_BITS.get(t.dtype, t.element_size() * 8)


def layer_stats(model: nn.Module) -> list[LayerStats]:
    """One row per module that owns weights (parameters, quantized packed weights, or its own ``layer_stats``).
    A parameter shared by several modules (tied weights: GPT-2's lm_head is its token embedding) is counted once,
    with the first module holding it; a module left with nothing of its own has no row."""
    rows: list[LayerStats] = []
    seen: set[int] = set()  # ids of the parameters already counted
    for name, module in model.named_modules():
        described = getattr(module, "layer_stats", None)
        if callable(described):
            d = described()
            rows.append(_row(name or "(model)", module, d["params"], d["nonzero"], d["dtype"], d["bits"],
                             d.get("simulated", False)))
            continue
        if hasattr(module, "_all_weight_values") and callable(getattr(module, "_weight_bias", None)):
            wb = module._weight_bias()  # torch.ao dynamic LSTM/GRU: int8 weights packed in TorchScript objects
            ts = list(wb["weight"].values()) + [b for b in wb["bias"].values() if b is not None]
            deq = [t.dequantize() if t.is_quantized else t for t in ts]
            main = ts[0]
            rows.append(_row(name, module, sum(t.numel() for t in ts), sum(int((t != 0).sum()) for t in deq),
                             str(main.dtype).replace("torch.", ""), _tensor_bits(main)))
            continue
        w = getattr(module, "weight", None)
        if callable(w) and not isinstance(w, nn.Parameter) and not isinstance(w, torch.Tensor):  # torch.ao quantized
            try:
                qw = w()
            except Exception:
                continue
            b = module.bias() if callable(getattr(module, "bias", None)) else None
            deq = qw.dequantize() if qw.is_quantized else qw
            n = qw.numel() + (b.numel() if b is not None else 0)
            nz = int((deq != 0).sum()) + (int((b != 0).sum()) if b is not None else 0)
            rows.append(_row(name, module, n, nz, str(qw.dtype).replace("torch.", ""), _tensor_bits(qw)))
            continue
        # every module that owns tensors itself: leaves, and also modules with children that own parameters
        # (nn.MultiheadAttention's in_proj, a TransformerEncoderLayer subclass, a block with its own scale)
        tensors = _own_tensors(module, seen)
        if tensors:
            if name == "" and list(module.children()):
                for pname, t in tensors:  # parameters owned by the root (e.g. a ViT's position embedding)
                    rows.append(_row(pname, t, t.numel(), int((t != 0).sum()), str(t.dtype).replace("torch.", ""),
                                     _tensor_bits(t), type_name="Parameter"))
                continue
            main = tensors[0][1]
            rows.append(_row(name, module, sum(t.numel() for _, t in tensors), sum(int((t != 0).sum()) for _, t in tensors),
                             str(main.dtype).replace("torch.", ""), _tensor_bits(main)))
    return rows


def _own_tensors(module: nn.Module, seen: set[int] | None = None) -> list[tuple[str, torch.Tensor]]:
    """Parameters owned directly by ``module``, with pruning reparametrisations resolved to effective weights;
    those whose id is in ``seen`` (counted with another module) are left out and the others added to it."""
    out = []
    buffers = dict(module.named_buffers(recurse=False))
    for pname, p in module.named_parameters(recurse=False):
        if seen is not None:
            if id(p) in seen:
                continue
            seen.add(id(p))
        base = pname[: -len("_orig")]
        if pname.endswith("_orig") and base + "_mask" in buffers:
            out.append((base, (p * buffers[base + "_mask"]).detach()))
        else:
            out.append((pname, p.detach()))
    out.sort(key=lambda kv: kv[0] != "weight")  # the weight first: it names the layer's dtype
    return out


def _row(name, module, params, nonzero, dtype, bits, simulated=False, type_name=None) -> LayerStats:
    return LayerStats(
        name=name,
        type=type_name or type(module).__name__,
        params=int(params),
        nonzero=int(nonzero),
        sparsity=round(1.0 - nonzero / params, 6) if params else 0.0,
        dtype=dtype,
        bits=int(bits),
        simulated=bool(simulated),
    )


def _extra(model: nn.Module, data: Any) -> dict[str, float]:
    """The workload's secondary metrics on the test split ({} for plain data or workloads with none)."""
    if not isinstance(getattr(data, "info", None), dict) or not data.info.get("extra_metrics"):
        return {}
    return compute(model, data)


def _sparse_size(model: nn.Module, layers: list[LayerStats]) -> int | None:
    """Bytes of the sparse-encoded file (compression_core.sparse) when any weight is zero, else None."""
    if all(layer.nonzero == layer.params for layer in layers):
        return None
    try:
        return sparse_size_bytes(model)
    except CompressionError:  # packed/quantized modules: not a plain float state_dict
        return None


def peak_ram_pair(model: Any, x: Any, batch_size: int) -> tuple[int | None, int | None]:
    """(peak RAM at ``batch_size``, at batch 1) in bytes of ``model`` (torch, or an ONNX model in ONNX Runtime) on
    the first items of ``x`` (``compression_core.peak_ram``); (None, None) when the model cannot be followed op by
    op (the other numbers still stand)."""
    try:
        b1 = peak_ram(model, I.head(x, 1))
        return (b1 if batch_size == 1 else peak_ram(model, I.head(x, batch_size))), b1
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception:
        return None, None


# ------------------------------------------------------------------------------------------------ measure
def measure(
    model: nn.Module,
    data: Any,
    name: str = "model",
    batch_size: int = 1,
    threads: int = 1,
    with_latency: bool = True,
    min_run_time: float = 0.3,
    scores: tuple[float, dict[str, float]] | None = None,
) -> ModelStats:
    """Measure ``model`` on ``data.test`` (a Workload, or anything with ``test.x``/``test.y``) with the data's metric.
    The model is not modified. ``scores``: (metric, extra metrics) of this model on ``data.test`` already measured
    (e.g. by ``live_eval.MoveEvaluator``, which replays unchanged blocks): not measured again."""
    x = data.test.x
    layers = layer_stats(model)
    example = I.head(x, batch_size)
    lat = latency(model, example, threads=threads, min_run_time=min_run_time) if with_latency else None
    total_flops, nonzero_flops = flops(model, I.take(x, slice(0, 1)))
    ram = peak_ram_pair(model, x, batch_size)
    simulated = any(layer.simulated for layer in layers)
    # simulated (fake-quant) layers are stored as float: also report the size their bit widths would take
    theoretical = sum(layer.bits * layer.params for layer in layers) // 8 if simulated else None
    return ModelStats(
        model=name,
        runtime="onnxruntime" if getattr(model, "is_onnx_runtime_model", False) else "torch",  # an OrtModule
        params=sum(layer.params for layer in layers),
        nonzero_params=sum(layer.nonzero for layer in layers),
        size_bytes=size_bytes(model),
        sparse_size_bytes=_sparse_size(model, layers),
        theoretical_size_bytes=theoretical,
        simulated=simulated,
        latency_ms=lat[0] if lat else None,
        latency_iqr_ms=lat[1] if lat else None,
        latency_runs=lat[2] if lat else None,
        batch_size=batch_size,
        threads=threads,
        accuracy=evaluate(model, data) if scores is None else float(scores[0]),
        metric=getattr(getattr(data, "metric", None), "name", "accuracy"),
        higher_is_better=bool(getattr(getattr(data, "metric", None), "higher_is_better", True)),
        metric_percent=bool(getattr(getattr(data, "metric", None), "percent", True)),
        extra=_extra(model, data) if scores is None else dict(scores[1]),
        flops=total_flops,
        nonzero_flops=nonzero_flops,
        layers=layers,
        peak_ram_bytes=ram[0],
        peak_ram_bytes_b1=ram[1],
    )
