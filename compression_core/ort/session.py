"""ONNX Runtime beside torch: sessions with 1 intra-op thread, ORT's own int8 quantization, and measurement.

Why: int8 in torch (``torch.ao`` dynamic/static, torchao) is often no faster than fp32 on a CPU without int8
dot-product instructions, while ONNX Runtime's int8 kernels are. Two ORT quantization methods of their own:

- ``OrtDynamicInt8``: weights int8 per output channel, activations quantized on the fly (``quantize_dynamic``).
- ``OrtStaticInt8``: QDQ int8 for weights and activations, scales calibrated on the calibration split
  (``quantize_static`` with a ``CalibrationDataReader``); Jacob et al. 2018, "Quantization and Training of Neural
  Networks for Efficient Integer-Arithmetic-Only Inference".

``reduce_range`` (7-bit weights) defaults to "auto": on x86 without VNNI the u8 x s8 multiply-add (``vpmaddubsw``)
sums pairs into int16 and can saturate; 7-bit weights avoid that (FACTS.md: 11% output error with ORT's
defaults vs 1.8% with per_channel + reduce_range on such a CPU). With VNNI (``vpdpbusd``) it is not needed.
See ``why_runtime_matters()`` for the explanation with numbers measured on this machine.

The deploy engine: ``deploy_onnx(model or bundle, workload)`` gives the .onnx bytes of any compressed model as what it
is (static int8 / QAT as QDQ with torch's own ranges, dynamic int8 as ORT dynamic int8, packed int4 as ORT
``MatMulNBits``), ``fastest_engine`` times it in torch and in ONNX Runtime now and names the faster, and a technique
run with ``engine="onnxruntime"`` returns an ``OrtModule``: an ``nn.Module`` whose state is the .onnx file and whose
forward runs an ORT session, so measure, recipes, bundles and the dashboard handle it like any model.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np
import torch
from pydantic import Field
from torch import nn

from . import inputs as I
from .errors import CompressionError
from .measure import LayerStats, ModelStats, flops as torch_flops
from .onnx_export import onnx_size_bytes, to_onnx
from .technique import StepConfig

OnnxLike = Union[bytes, str, os.PathLike, Any]  # serialized bytes, a .onnx path, or an onnx.ModelProto

RUNTIMES = ("torch", "onnxruntime")


# --------------------------------------------------------------------------------------------------- CPU
@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags (Linux /proc/cpuinfo); empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_int8_dot() -> bool:
    """True if the CPU has int8 dot-product instructions (x86 VNNI / AMX, ARM dotprod): then int8 multiply-adds
    accumulate straight into int32 without the int16 saturation that makes ``reduce_range`` necessary."""
    flags = cpu_flags()
    if flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}:
        return True
    return platform.system() == "Darwin" and platform.machine() == "arm64"  # Apple silicon has dotprod


def cpu_summary() -> str:
    """One line: the int8-relevant SIMD features of this CPU."""
    flags = cpu_flags()
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp") if f in flags]
    return (f"{platform.machine()}, {os.cpu_count()} cores, features: {', '.join(have) or 'unknown'}; int8 "
            f"dot-product instructions: {'yes' if cpu_has_int8_dot() else 'no'}")


# ----------------------------------------------------------------------------------------------- sessions
def _proto(onnx_model: OnnxLike):
    import onnx

    if isinstance(onnx_model, bytes):
        return onnx.ModelProto.FromString(onnx_model)
    if isinstance(onnx_model, (str, os.PathLike)):
        return onnx.load_model(str(onnx_model))
    return onnx_model


def _bytes(onnx_model: OnnxLike) -> bytes:
    if isinstance(onnx_model, bytes):
        return onnx_model
    if isinstance(onnx_model, (str, os.PathLike)):
        return _proto(onnx_model).SerializeToString()  # loads external data too
    return onnx_model.SerializeToString()


def session(onnx_model: OnnxLike, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads (default 1), one
    inter-op thread, sequential execution and all graph optimisations."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    src = str(onnx_model) if isinstance(onnx_model, (str, os.PathLike)) else _bytes(onnx_model)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CompressionError(f"onnxruntime: cannot load the model: {first[:300]}") from e


_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
             "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def _array(t: torch.Tensor, onnx_type: str) -> np.ndarray:
    """A tensor as the numpy array the session input expects (float to its float type; integer ids stay exact)."""
    arr = t.detach().cpu().numpy()
    want = _NP_TYPES.get(onnx_type)
    if want is None or arr.dtype == want:
        return arr
    if np.issubdtype(arr.dtype, np.integer) and np.issubdtype(want, np.floating):
        raise CompressionError(f"onnxruntime: the model takes {onnx_type} but the input holds integers "
                               "(token ids are never cast to a float type)")
    return arr.astype(want, copy=False)


def _feed(sess, x) -> dict[str, np.ndarray]:
    """The session's inputs from a batch: a tensor (the one input) or a dict of tensors matched by name."""
    inputs = sess.get_inputs()
    if I.is_dict(x):
        missing = [i.name for i in inputs if i.name not in x]
        if missing:
            raise CompressionError(f"onnxruntime: the model takes inputs {[i.name for i in inputs]}, the batch has "
                                   f"{list(x)}")
        return {i.name: _array(x[i.name], i.type) for i in inputs}
    return {inputs[0].name: _array(x, inputs[0].type)}


def ort_predict(sess, x, batch_size: int = 1024) -> torch.Tensor:
    """Outputs (float32) of the session on ``x`` (a tensor or a dict of tensors), batched."""
    n = I.n_items(x)
    outs = [torch.from_numpy(np.asarray(sess.run(None, _feed(sess, I.take(x, slice(i, i + batch_size))))[0])
                             .astype(np.float32)) for i in range(0, n, batch_size)]
    return torch.cat(outs)


def ort_accuracy(sess, x, y: torch.Tensor) -> float:
    """Fraction of ``x`` the session classifies as ``y``."""
    if len(y) == 0:
        return 0.0
    return int((ort_predict(sess, x).argmax(1) == y).sum()) / len(y)


def ort_latency(sess, example, min_run_time: float = 0.3, warmup: int = 10) -> tuple[float, float, int]:
    """(median ms, IQR ms, runs) of one ``sess.run`` on ``example``: torch.utils.benchmark's Timer around the call,
    as torch latency is measured (the session's own intra-op thread count applies)."""
    from torch.utils import benchmark

    feed = _feed(sess, example)
    for _ in range(warmup):
        sess.run(None, feed)
    timer = benchmark.Timer(stmt="sess.run(None, feed)", globals={"sess": sess, "feed": feed}, num_threads=1)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return m.median * 1e3, m.iqr * 1e3, len(m.times) * m.number_per_run


# ------------------------------------------------------------------------------------------ quantization
class OrtDynamicInt8(StepConfig):
    """ONNX Runtime dynamic int8: int8 weights, activations quantized per call (no calibration)."""

    kind: Literal["ort_dynamic_int8"] = "ort_dynamic_int8"
    per_channel: bool = True
    reduce_range: bool | Literal["auto"] = "auto"  # auto: 7-bit weights where the CPU lacks VNNI / dotprod
    weight_type: Literal["qint8", "quint8"] = "qint8"
    # Linear-like and recurrent layers; convolutions stay float: ORT's dynamic ConvInteger was 8x slower than its
    # fp32 Conv at batch 32 on digits-cnn (use OrtStaticInt8 for convs). None: every op type ORT can quantize.
    op_types: tuple[str, ...] | None = ("MatMul", "Gemm", "LSTM", "GRU", "Attention")


class OrtStaticInt8(StepConfig):
    """ONNX Runtime static int8 in QDQ format: weights and activations int8, scales from the calibration split."""

    kind: Literal["ort_static_int8"] = "ort_static_int8"
    per_channel: bool = True
    reduce_range: bool | Literal["auto"] = "auto"
    activation_type: Literal["quint8", "qint8"] = "quint8"
    weight_type: Literal["qint8", "quint8"] = "qint8"
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    calib_samples: int = Field(512, ge=1, le=100_000)  # at most this many calibration samples (all if fewer)
    calib_batch_size: int = Field(64, ge=1, le=4096)
    # the layers with weights; LayerNorm/Softmax/GELU/Add stay float (quantizing them too cost the ViT argmax
    # agreement with fp32: 98.9% vs 99.4% measured). None: every op type ORT can quantize.
    op_types: tuple[str, ...] | None = ("Conv", "Gemm", "MatMul")


OrtQuantConfig = Union[OrtDynamicInt8, OrtStaticInt8]


def resolve_reduce_range(value: bool | str) -> bool:
    """``"auto"`` -> True on CPUs without int8 dot-product instructions (see module docstring)."""
    return (not cpu_has_int8_dot()) if value == "auto" else bool(value)


class _CalibReader:
    """A ``CalibrationDataReader`` over calibration inputs (a tensor or a dict of tensors named like the model's
    inputs), ``batch_size`` samples per call."""

    def __init__(self, names: list[str], x, batch_size: int) -> None:
        n = I.n_items(x)
        self.batches = []
        for i in range(0, n, batch_size):
            part = I.take(x, slice(i, i + batch_size))
            if I.is_dict(part):
                self.batches.append({k: v.detach().cpu().numpy() for k, v in part.items() if k in names})
            else:
                arr = part.detach().cpu().numpy()
                self.batches.append({names[0]: arr if np.issubdtype(arr.dtype, np.integer) else arr.astype(np.float32)})
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return self.batches[self.i - 1]

    def rewind(self) -> None:
        self.i = 0


def _quant_type(name: str):
    from onnxruntime.quantization import QuantType

    return {"qint8": QuantType.QInt8, "quint8": QuantType.QUInt8}[name]


def ort_quantize(onnx_model: OnnxLike, cfg: OrtQuantConfig, calib_x=None, nodes: list[str] | None = None) -> bytes:
    """The serialized int8 .onnx model of ``onnx_model`` (an fp32 export) under ``cfg``; static needs ``calib_x``
    (the calibration split's inputs: a tensor, or a dict named like the model's inputs). ``nodes``: quantize only
    these ONNX nodes (a recipe's chosen layers, ``layer_nodes``); None = every node of ``cfg.op_types``. The input is
    not modified."""
    import logging

    from onnxruntime import quantization as q

    proto = _proto(onnx_model)
    fp32 = all(i.type.tensor_type.elem_type not in (10, 11, 16) for i in proto.graph.input)
    if not fp32:
        raise CompressionError(f"{cfg.kind}: ONNX Runtime int8 quantization needs an fp32 model; export the "
                               "float32 model (not fp16/bf16)")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
                         "QLinearMatMul", "DynamicQuantizeLinear") for n in proto.graph.node):
        raise CompressionError(f"{cfg.kind}: the model is already quantized; quantize the fp32 export")
    reduce_range = resolve_reduce_range(cfg.reduce_range)
    op_types = list(cfg.op_types) if cfg.op_types else None
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizer logs advice through the root logger
    try:
        with tempfile.TemporaryDirectory(prefix="ortq-") as tmp, contextlib.redirect_stdout(io.StringIO()):
            src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            try:
                q.quant_pre_process(proto, str(src), skip_symbolic_shape=False)
            except Exception:  # pre-processing only helps; quantize the export as it is if it fails
                src.write_bytes(proto.SerializeToString())
            if nodes is not None:  # pre-processing renames the nodes it fuses "<name>/<fusion>"
                import onnx

                names = [n.name for n in onnx.load_model(str(src), load_external_data=False).graph.node]
                chosen = {m for m in names for n in nodes if m == n or m.startswith(n + "/")}
                nodes = sorted(chosen | {m + suffix for m in chosen for suffix in ("_MatMul", "_Add")})
            if isinstance(cfg, OrtDynamicInt8):
                q.quantize_dynamic(str(src), str(out), op_types_to_quantize=op_types, per_channel=cfg.per_channel,
                                   reduce_range=reduce_range, weight_type=_quant_type(cfg.weight_type),
                                   nodes_to_quantize=nodes)
            else:
                if calib_x is None or I.n_items(calib_x) == 0:
                    raise CompressionError("ort_static_int8: calibration data is needed (the calibration split)")
                cx = I.take(calib_x, slice(0, cfg.calib_samples))
                n = I.n_items(cx)
                bs = min(cfg.calib_batch_size, n)
                if cfg.calibrate_method != "minmax":  # ORT's histogram collectors need equal-sized batches
                    cx = I.take(cx, slice(0, n - n % bs))
                reader = _CalibReader([i.name for i in proto.graph.input], cx, bs)
                method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                          "percentile": q.CalibrationMethod.Percentile}[cfg.calibrate_method]
                q.quantize_static(str(src), str(out), reader, quant_format=q.QuantFormat.QDQ,
                                  op_types_to_quantize=op_types, per_channel=cfg.per_channel, nodes_to_quantize=nodes,
                                  reduce_range=reduce_range, activation_type=_quant_type(cfg.activation_type),
                                  weight_type=_quant_type(cfg.weight_type), calibrate_method=method)
            return out.read_bytes()
    except CompressionError:
        raise
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CompressionError(f"{cfg.kind}: ONNX Runtime quantization failed: {type(e).__name__}: "
                               f"{first[:300]}") from e
    finally:
        root.setLevel(level)


# --------------------------------------------------------------------------------------- layers -> nodes
def _scopes(node) -> list[str]:
    """The module path of an exported node (torch.onnx's ``pkg.torch.onnx.name_scopes`` metadata)."""
    import ast

    for kv in node.metadata_props:
        if kv.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(v) for v in ast.literal_eval(kv.value)]
            except (ValueError, SyntaxError):
                return []
    return []


def _node_weight(node, inits: dict) -> np.ndarray | None:
    """The constant weight of a Conv/Gemm/MatMul node as (out, fan_in), or None."""
    from onnx import helper, numpy_helper

    if len(node.input) < 2 or node.input[1] not in inits:
        return None
    w = numpy_helper.to_array(inits[node.input[1]])
    if node.op_type == "MatMul" and w.ndim == 2:
        w = w.T  # (in, out) -> (out, in)
    elif node.op_type == "Gemm":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if not attrs.get("transB", 0):
            w = w.T
    return w.reshape(w.shape[0], -1) if w.ndim >= 2 else None


def _proportional(a: np.ndarray, b: np.ndarray) -> bool:
    """True if every row of ``a`` is a multiple of the same row of ``b`` (a weight with a BatchNorm folded in)."""
    if a.shape != b.shape:
        return False
    a, b = a.astype(np.float64), b.astype(np.float64)
    scale = (a * b).sum(1, keepdims=True) / np.maximum((b * b).sum(1, keepdims=True), 1e-30)
    return bool(np.linalg.norm(a - scale * b) <= 1e-4 * max(np.linalg.norm(a), 1e-12))


def layer_nodes(proto, layers, op_types: tuple[str, ...] = ("Conv", "Gemm", "MatMul", "LSTM", "GRU"),
                weights: dict[str, torch.Tensor] | None = None) -> dict[str, list[str]]:
    """{layer name: names of the ONNX nodes of ``op_types`` it was exported as}: how a recipe's per-layer choices
    (targets, ignore, overrides) reach ONNX Runtime. Found from the exporter's module scopes (an export made with
    ``keep_metadata=True``); where the exporter folded a BatchNorm into a convolution (the node then carries the
    BatchNorm's scope), from ``weights`` (layer -> weight): the node whose weight is the layer's, row by row up to
    the folded scale."""
    wanted = list(layers)
    out: dict[str, list[str]] = {name: [] for name in wanted}
    claimed: set[str] = set()
    for node in proto.graph.node:
        if node.op_type not in op_types:
            continue
        hits = [sc for sc in _scopes(node) if sc in out]
        if hits:
            out[hits[-1]].append(node.name)  # the innermost selected scope
            claimed.add(node.name)
    missing = [n for n in wanted if not out[n] and weights is not None and n in weights]
    if missing:
        inits = {i.name: i for i in proto.graph.initializer}
        candidates = [(node, _node_weight(node, inits)) for node in proto.graph.node
                      if node.op_type in op_types and node.name not in claimed]
        for name in missing:
            w = weights[name].detach().float().numpy()
            w = w.reshape(w.shape[0], -1)
            for node, nw in candidates:
                if nw is not None and node.name not in claimed and _proportional(nw, w):
                    out[name].append(node.name)
                    claimed.add(node.name)
                    break
    return out


def gemm_to_matmul(proto) -> int:
    """Rewrite ``Gemm(A, B, C)`` with a constant B as ``MatMul(A, B')`` + ``Add(C)`` in place (ONNX Runtime's
    weight-only int4 quantizer only takes MatMul); returns how many were rewritten."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    done = 0
    for node in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if (node.op_type != "Gemm" or len(node.input) < 2 or node.input[1] not in inits or attrs.get("transA", 0)
                or attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0):
            proto.graph.node.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if attrs.get("transB", 0):
            w = w.T
        wname = node.input[1] + "_matmul"
        proto.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w), wname))
        has_bias = len(node.input) > 2 and node.input[2]
        mm_out = node.output[0] + "_matmul" if has_bias else node.output[0]
        mm = helper.make_node("MatMul", [node.input[0], wname], [mm_out], name=node.name)
        mm.metadata_props.extend(node.metadata_props)
        proto.graph.node.append(mm)
        if has_bias:
            add = helper.make_node("Add", [mm_out, node.input[2]], [node.output[0]], name=node.name + "_bias")
            add.metadata_props.extend(node.metadata_props)
            proto.graph.node.append(add)
        done += 1
    used = {i for n in proto.graph.node for i in n.input}
    keep = [i for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    return done


def ort_int4(onnx_model: OnnxLike, block_size: int = 32, symmetric: bool = True, nodes: list[str] | None = None,
             bits: int = 4) -> bytes:
    """Weight-only int4 (or int8) of the MatMul nodes with constant weights, as ONNX Runtime's ``MatMulNBits``
    (``MatMulNBitsQuantizer``, block-wise scales, accuracy level 4: int8 activations inside the kernel). Gemm nodes
    are first rewritten as MatMul + Add. ``nodes``: only these (None = every MatMul with a constant weight)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    proto = _proto(onnx_model)
    proto = type(proto).FromString(proto.SerializeToString())  # the caller's proto stays as it is
    gemm_to_matmul(proto)
    try:
        with contextlib.redirect_stdout(io.StringIO()), _quiet_logging():
            quant = MatMulNBitsQuantizer(proto, bits=bits, block_size=block_size, is_symmetric=symmetric,
                                         accuracy_level=4, nodes_to_include=nodes)
            quant.process()
        return quant.model.model.SerializeToString()
    except Exception as e:  # noqa: BLE001
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CompressionError(f"quantize_int4: ONNX Runtime MatMulNBits quantization failed: {type(e).__name__}: "
                               f"{first[:300]}") from e


@contextlib.contextmanager
def _quiet_logging():
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizers log advice through the root logger
    try:
        yield
    finally:
        root.setLevel(level)


# -------------------------------------------------------------------------------------- the ORT engine
class OrtModule(nn.Module):
    """A model that runs in ONNX Runtime, as an ``nn.Module``: its state is the .onnx file itself (one uint8
    buffer ``onnx_model``, so ``measure``'s size is the real bytes plus a few of framing, and bundles carry the
    file), and ``forward`` runs an ORT session with 1 intra-op thread. Inputs: a tensor, or keyword tensors named
    like the model's ONNX inputs (integer ids stay integer). What a technique with ``engine="onnxruntime"``
    returns."""

    is_onnx_runtime_model = True

    def __init__(self, onnx_bytes: bytes = b"", storage: str = "int8", bits: int = 8, threads: int = 1,
                 source: nn.Module | None = None) -> None:
        super().__init__()
        self.storage, self.bits, self.threads = storage, bits, threads
        data = torch.frombuffer(bytearray(onnx_bytes), dtype=torch.uint8) if onnx_bytes else torch.zeros(0, dtype=torch.uint8)
        self.register_buffer("onnx_model", data)
        # the parameter count of the model it was made from (packed int4 initializers hold two weights per byte)
        counts = (0, 0)
        if source is not None:
            from .measure import layer_stats

            rows = layer_stats(source)
            counts = (sum(r.params for r in rows), sum(r.nonzero for r in rows))
        self.register_buffer("source_params", torch.tensor(counts, dtype=torch.int64))
        self._session = None

    @property
    def onnx_bytes(self) -> bytes:
        return self.onnx_model.numpy().tobytes()

    @property
    def size_bytes(self) -> int:
        """Bytes of the .onnx file."""
        return int(self.onnx_model.numel())

    def session(self):
        if self._session is None:
            if self.onnx_model.numel() == 0:
                raise CompressionError("onnxruntime: this OrtModule holds no model yet (load its state first)")
            sess = session(self.onnx_bytes, threads=self.threads)
            self._inputs = [(i.name, _NP_TYPES.get(i.type)) for i in sess.get_inputs()]
            self._session = sess
        return self._session

    def forward(self, *args, **kwargs) -> torch.Tensor:
        sess = self.session()
        if len(args) == 1 and not kwargs and len(self._inputs) == 1:  # the common case, kept lean (batch 1)
            name, want = self._inputs[0]
            arr = args[0].detach().cpu().numpy()
            if want is not None and arr.dtype != want:
                arr = _array(args[0], next(i.type for i in sess.get_inputs()))
            return torch.from_numpy(sess.run(None, {name: arr})[0])
        names = [n for n, _ in self._inputs]
        batch = dict(zip(names, args))
        batch.update(kwargs)
        return torch.from_numpy(np.asarray(sess.run(None, _feed(sess, batch))[0]))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        for name in ("onnx_model", "source_params"):
            key = prefix + name
            if key in state_dict:  # any length: the file is the state
                setattr(self, name, state_dict[key].detach().clone())
                self._session = None
            elif strict:
                missing_keys.append(key)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_session"] = None  # sessions are rebuilt from the bytes, never copied or pickled
        state.pop("_inputs", None)
        return state

    def layer_stats(self) -> dict:
        rows = onnx_layer_stats(self.onnx_bytes) if self.onnx_model.numel() else []
        weights = [r for r in rows if r.type in ("Conv", "Gemm", "MatMul", "MatMulNBits", "DequantizeLinear",
                                                  "MatMulInteger", "ConvInteger", "LSTM", "GRU", "DynamicQuantizeLSTM")]
        rows = weights or rows
        params, nonzero = (int(v) for v in self.source_params.tolist())
        if not params:
            params, nonzero = sum(r.params for r in rows), sum(r.nonzero for r in rows)
        return {"params": params, "nonzero": nonzero, "dtype": self.storage, "bits": self.bits, "simulated": False}

    def extra_repr(self) -> str:
        return f"ONNX Runtime model, {self.size_bytes:,} bytes, {self.storage}"


def _example(wl, n: int = 2):
    """A batch of ``n`` inputs from the workload (calib, else test, else train split)."""
    for split in ("calib", "test", "train"):
        s = getattr(wl, split, None) if wl is not None else None
        if s is not None and len(s) > 0:
            return I.head(s.x, n)
    raise CompressionError("data: exporting to ONNX needs example inputs; pass the workload")


def _selected_nodes(proto, layers: list[str], op_types: tuple[str, ...], technique: str,
                    model: nn.Module | None = None) -> list[str]:
    weights = None
    if model is not None:
        from .measure import effective_weight

        weights = {n: w for n in layers if (w := effective_weight(model.get_submodule(n))) is not None}
    found = layer_nodes(proto, layers, op_types, weights)
    missing = [name for name, nodes in found.items() if not nodes]
    if missing:
        raise CompressionError(f"targets: layer {missing[0]!r} has no {'/'.join(op_types)} node in the ONNX export, "
                               f"so {technique} cannot quantize it in ONNX Runtime; leave it out with ignore")
    return [n for nodes in found.values() for n in nodes]


def ort_int8_step(model: nn.Module, cfg, ctx, qat: bool) -> nn.Module:
    """A static int8 / QAT / dynamic int8 step realised in ONNX Runtime (``engine="onnxruntime"``): the same layers
    the torch engine would quantize, the same calibration split; QAT trains in torch (graph mode) and exports its
    learned ranges as QDQ. Returns an ``OrtModule``."""
    from .onnx_export import export_float
    from .prune.common import fold_masks
    from .quantize._common import require_split, select_layers

    if ctx.replay:
        return OrtModule()
    if qat:
        from .quantize.static import build_int8

        trained = build_int8(model, cfg, ctx, qat=True, check_size=False)  # the ORT file is what ships
        return OrtModule(deploy_onnx(trained, ctx.data), storage="int8", bits=8, source=model)
    if getattr(cfg, "weight_bits", 8) != 8:
        raise CompressionError(f"weight_bits: ONNX Runtime's int8 stores 8-bit weights; use engine='torch' for "
                               f"weight_bits={cfg.weight_bits}")
    fold_masks(model)
    dynamic = cfg.kind == "quantize_dynamic"
    if dynamic:
        types: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)
        op_types: tuple[str, ...] = ("MatMul", "Gemm", "LSTM", "GRU")
    else:
        types, op_types = (nn.Linear, nn.Conv1d, nn.Conv2d), ("Conv", "Gemm", "MatMul")
    names = select_layers(model, cfg, ctx, types, cfg.kind)
    if not names:
        raise CompressionError(f"targets: {cfg.kind} selected no layer; name some in targets")
    ctx.report(0.1, "exporting the float model to ONNX")
    proto = export_float(model, _example(ctx.data), keep_metadata=True)
    if dynamic:
        gemm_to_matmul(proto)  # ORT's dynamic int8 quantizes MatMul (MatMulInteger), not Gemm
    nodes = _selected_nodes(proto, names, op_types, cfg.kind, model)
    ctx.report(0.4, f"ONNX Runtime {'dynamic' if dynamic else 'static QDQ'} int8 of {len(names)} layers")
    if dynamic:
        blob = ort_quantize(proto, OrtDynamicInt8(op_types=op_types), nodes=nodes)
    else:
        calib = require_split(ctx, "calib", "data", cfg.kind)
        # ORT calibrates with its own min-max observer (torch's histogram observer has no ORT twin; ORT's entropy
        # and percentile calibrators need equal batches and more samples than a calibration split has here)
        blob = ort_quantize(proto, OrtStaticInt8(per_channel=cfg.weights == "per_channel", calibrate_method="minmax",
                                                 op_types=op_types), calib_x=calib.x, nodes=nodes)
    ctx.report(1.0, "done")
    return OrtModule(_stripped(blob), storage="int8", bits=8, source=model)


def ort_int4_step(model: nn.Module, cfg, ctx) -> nn.Module:
    """Weight-only int4 realised in ONNX Runtime (``Int4Config(engine="onnxruntime")``): the selected Linear layers
    exported as MatMul and quantized to ``MatMulNBits`` (block = the config's group size, 32 when per channel),
    8-bit overrides as 8-bit ``MatMulNBits``. Returns an ``OrtModule``."""
    from .onnx_export import export_float
    from .quantize.int4 import int4_layer_bits

    if ctx.replay:
        return OrtModule(storage="int4", bits=4)
    bits = int4_layer_bits(model, cfg, ctx)
    ctx.report(0.1, "exporting the float model to ONNX (Linear layers as MatMul)")
    proto = export_float(model, _example(ctx.data), keep_metadata=True)
    gemm_to_matmul(proto)
    block = cfg.group_size or 32
    blob: OnnxLike = proto
    for b in (4, 8):
        chosen = [n for n, v in bits.items() if v == b]
        if chosen:
            ctx.report(0.5 if b == 4 else 0.8, f"MatMulNBits int{b} of {len(chosen)} layers (block {block})")
            blob = ort_int4(blob, block_size=block, symmetric=cfg.symmetric, bits=b,
                            nodes=_selected_nodes(_proto(blob), chosen, ("MatMul",), "quantize_int4"))
    ctx.report(1.0, "done")
    return OrtModule(_stripped(blob), storage="int4", bits=4, source=model)


def _stripped(onnx_model: OnnxLike) -> bytes:
    from .onnx_export import strip_metadata

    proto = _proto(onnx_model)
    strip_metadata(proto)
    return proto.SerializeToString()


# ------------------------------------------------------------------------------------------- deployment
def deploy_proto(model: nn.Module, example, opset: int | None = None):
    """The ONNX ModelProto that deploys ``model`` in ONNX Runtime, whatever its compression:

    - an ``OrtModule`` (a step run with ``engine="onnxruntime"``): its own file;
    - static int8 / QAT of torch.ao (graph or eager mode): ONNX QDQ with torch's own ranges (int8 weights, int32
      biases, the calibrated or learned activation scales), which ONNX Runtime fuses into int8 kernels;
    - dynamic int8: the layers' int8 weights dequantized, exported, and ONNX Runtime dynamic int8 of the same layers;
    - packed int4 / int8 weight-only Linear layers: ONNX Runtime ``MatMulNBits`` of the same layers, block = their
      group size;
    - anything else: the float export.
    """
    import onnx

    from .onnx_export import export_float, strip_metadata
    from .quantize import _torch_ao
    from .quantize.int4 import _WeightOnlyLinear

    if isinstance(model, OrtModule):
        return onnx.ModelProto.FromString(model.onnx_bytes)
    if any(isinstance(m, OrtModule) for m in model.modules()):
        raise CompressionError("export: a model with an ONNX Runtime part inside a torch model cannot be exported "
                               "as one file; run every step in one engine")
    if _torch_ao.is_graph_quantized(model) or _static_eager(model):
        try:
            ref = _torch_ao.qdq_module(model)
        except _torch_ao.QDQExportError as e:
            raise CompressionError(f"export: the int8 model has no ONNX QDQ form: {e}; export the float model "
                                   "and quantize it in ONNX Runtime (engine='onnxruntime')") from None
        return export_float(ref, example, opset)
    dyn = [(n, m) for n, m in model.named_modules() if _torch_ao.is_dynamic_module(m)]
    packed = [(n, m) for n, m in model.named_modules() if isinstance(m, _WeightOnlyLinear)]
    if not dyn and not packed:
        return export_float(model, example, opset)
    from .technique import clone_model

    float_model = clone_model(model)
    for name, m in dyn + packed:
        _set(float_model, name, _torch_ao.dequantized_float(m) if (name, m) in dyn else _linear_of(m))
    proto = export_float(float_model, example, opset, keep_metadata=True)
    gemm_to_matmul(proto)  # ORT's dynamic int8 and int4 quantize MatMul nodes
    blob: OnnxLike = proto
    if dyn:
        nodes = _selected_nodes(proto, [n for n, _ in dyn], ("MatMul", "Gemm", "LSTM", "GRU"), "quantize_dynamic")
        blob = ort_quantize(proto, OrtDynamicInt8(), nodes=nodes)
    if packed:
        for bits in (4, 8):
            for group in sorted({m.group_size for _, m in packed if m.bits == bits}):
                chosen = [n for n, m in packed if m.bits == bits and m.group_size == group]
                if chosen:
                    blob = ort_int4(blob, block_size=_block(group), symmetric=all(
                        m.symmetric for n, m in packed if n in chosen), bits=bits,
                        nodes=_selected_nodes(_proto(blob), chosen, ("MatMul",), "quantize_int4"))
    out = _proto(blob)
    strip_metadata(out)
    return out


def _block(group: int) -> int:
    """ONNX Runtime's MatMulNBits takes power-of-two blocks of at least 16: the group size, or the power of two at
    or above it (a per-channel layer: its padded row)."""
    b = 16
    while b < group:
        b *= 2
    return b


def _static_eager(model: nn.Module) -> bool:
    from .quantize import _torch_ao

    return any(isinstance(m, _torch_ao.QuantWrapper) for m in model.modules())


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def _linear_of(m) -> nn.Linear:
    """A float nn.Linear with a packed weight-only layer's dequantized weight."""
    lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(m.dequantized_weight())
        if m.bias is not None:
            lin.bias.copy_(m.bias.detach().float())
    return lin.eval()


def deploy_onnx(model_or_bundle, workload=None) -> bytes:
    """The .onnx bytes that deploy a compressed model in ONNX Runtime (``deploy_proto``), for the CLI's
    ``export --onnx``, the dashboard's download and ``fastest_engine``. ``model_or_bundle``: a model, or a bundle
    file written by ``apply --save-model`` (its workload is rebuilt from the reference it records).
    ``workload``: where the example inputs come from (needed for a model; a bundle brings its own)."""
    import os

    if isinstance(model_or_bundle, (str, os.PathLike)):
        from .bundle import load_bundle

        recipe, model = load_bundle(model_or_bundle)
        workload = workload if workload is not None else recipe.workload()
    else:
        model = model_or_bundle
    if isinstance(model, OrtModule):
        return model.onnx_bytes
    from .onnx_export import _PROTOBUF_LIMIT, to_onnx

    proto = to_onnx(model, _example(workload))
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise CompressionError("export: model is over 2 GiB; write it to a file with export_onnx(..., external_data=True)")
    return proto.SerializeToString()


def fastest_engine(model: nn.Module, workload, batch_sizes: tuple[int, ...] = (1, 32), min_run_time: float = 0.2,
                   rounds: int = 3, onnx: bytes | None = None) -> dict[str, Any]:
    """Time ``model`` in torch and deployed in ONNX Runtime (``deploy_onnx``), both in this run, 1 thread,
    alternating rounds (median of the per-round medians), and name the faster at the largest batch size.

    Returns {engine: "torch" | "onnxruntime", ms: {engine: {batch: ms}}, speedup (torch ms / ORT ms at that batch),
    onnx_bytes, agreement (argmax of the ORT outputs vs the torch model's on the test split), reason}. A model that
    already runs in ONNX Runtime (an ``OrtModule``) has one engine only."""
    from .measure import latency, predict

    blob = onnx if onnx is not None else deploy_onnx(model, workload)
    sess = session(blob)
    x = workload.test.x
    ort_only = isinstance(model, OrtModule)
    timers = {"onnxruntime": lambda b, mrt: ort_latency(sess, I.head(x, b), min_run_time=mrt)[0]}
    if not ort_only:
        timers["torch"] = lambda b, mrt: latency(model, I.head(x, b), min_run_time=mrt)[0]
    times: dict[str, dict[int, list[float]]] = {e: {b: [] for b in batch_sizes} for e in timers}
    for _ in range(max(1, rounds)):
        for b in batch_sizes:
            for engine, t in timers.items():
                times[engine][b].append(t(b, min_run_time / max(1, rounds)))
    ms = {e: {b: float(np.median(v)) for b, v in per.items()} for e, per in times.items()}
    big = max(batch_sizes)
    engine = min(ms, key=lambda e: ms[e][big])
    ref = predict(model, x).argmax(-1)
    agreement = float((ort_predict(sess, x).argmax(-1) == ref).float().mean())
    speed = {b: ms["torch"][b] / ms["onnxruntime"][b] for b in batch_sizes} if not ort_only else {}
    reason = ("it runs in ONNX Runtime only" if ort_only else
              f"{engine} is {max(speed[big], 1 / speed[big]):.2f}x faster at batch {big} "
              f"({ms['torch'][big]:.3f} ms torch vs {ms['onnxruntime'][big]:.3f} ms ONNX Runtime, 1 thread)")
    return {"engine": engine, "ms": ms, "speedup": speed, "onnx_bytes": len(blob), "agreement": agreement,
            "reason": reason, "threads": 1}


# ------------------------------------------------------------------------------------------- measurement
_ONNX_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 10: 16, 11: 64, 16: 16}
_ONNX_DTYPE = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
               10: "float16", 11: "float64", 16: "bfloat16"}
_QPARAM_SUFFIXES = ("_scale", "_zero_point")  # ORT's quantizer names quantization parameters this way


def onnx_layer_stats(onnx_model: OnnxLike) -> list[LayerStats]:
    """One row per weight tensor stored in the ONNX file (initializers with more than one element), typed by the
    operator that consumes it; ORT's quantization scales and zero points are left out (they are in the size)."""
    from onnx import numpy_helper

    proto = _proto(onnx_model)
    consumer: dict[str, str] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumer.setdefault(name, node.op_type)
    rows = []
    for init in proto.graph.initializer:
        numel = int(np.prod(init.dims)) if len(init.dims) else 1
        if numel <= 1 or init.name.endswith(_QPARAM_SUFFIXES):
            continue
        arr = numpy_helper.to_array(init)
        nonzero = int(np.count_nonzero(arr))
        rows.append(LayerStats(
            name=init.name, type=consumer.get(init.name, "initializer"), params=numel, nonzero=nonzero,
            sparsity=round(1.0 - nonzero / numel, 6), dtype=_ONNX_DTYPE.get(init.data_type, str(init.data_type)),
            bits=_ONNX_BITS.get(init.data_type, 32),
        ))
    return rows


def measure_ort(
    onnx_model: OnnxLike | nn.Module,
    data: Any,
    name: str = "model",
    batch_size: int = 1,
    threads: int = 1,
    with_latency: bool = True,
    min_run_time: float = 0.3,
    source: nn.Module | None = None,
) -> ModelStats:
    """Measure a model in ONNX Runtime on ``data.test`` (a Workload or splits): the workload's metric (top-1
    accuracy by default) and latency through onnxruntime, size = the .onnx bytes (+ external data when given a
    path). A torch model is deployed first (``deploy_proto``: quantized models as what they are). FLOPs are those of
    ``source`` (the torch model the file came from; the model itself when a torch model is given), 0 when unknown."""
    test = data.test
    if isinstance(onnx_model, nn.Module):
        source = onnx_model if source is None else source
        onnx_model = deploy_proto(onnx_model, I.head(test.x, 2)) if not isinstance(onnx_model, OrtModule) \
            else onnx_model.onnx_bytes
    if isinstance(onnx_model, (str, os.PathLike)):
        size = onnx_size_bytes(onnx_model)
    else:
        size = len(_bytes(onnx_model))
    sess = session(onnx_model, threads=threads)
    x, y = test.x, test.y
    lat = ort_latency(sess, I.head(x, batch_size), min_run_time=min_run_time) if with_latency else None
    layers = onnx_layer_stats(onnx_model)
    flops_of = source if source is not None and not isinstance(source, OrtModule) else None
    total_flops, nonzero_flops = torch_flops(flops_of, I.head(x, 1)) if flops_of is not None else (0, 0)
    metric = getattr(data, "metric", None)
    if callable(metric) and not isinstance(data, type):
        value = float(metric(ort_predict(sess, x), y))
    else:
        value = ort_accuracy(sess, x, y)
    return ModelStats(
        model=name, runtime="onnxruntime",
        params=sum(layer.params for layer in layers), nonzero_params=sum(layer.nonzero for layer in layers),
        size_bytes=size, latency_ms=lat[0] if lat else None, latency_iqr_ms=lat[1] if lat else None,
        latency_runs=lat[2] if lat else None, batch_size=batch_size, threads=threads,
        accuracy=value, flops=total_flops, nonzero_flops=nonzero_flops, layers=layers,
    )


def measure_in(runtime: str, model: nn.Module, data: Any, **kwargs) -> ModelStats:
    """``measure`` with a runtime choice: "torch" (compression_core.measure) or "onnxruntime" (export + ORT)."""
    if runtime == "torch":
        from .measure import measure

        return measure(model, data, **kwargs)
    if runtime == "onnxruntime":
        return measure_ort(model, data, **kwargs)
    raise CompressionError(f"runtime: unknown {runtime!r}; choose one of {', '.join(RUNTIMES)}")


# ------------------------------------------------------------------------------------------ the lesson
def runtime_comparison(model_name: str = "mnist-lenet300", min_run_time: float = 0.1, rounds: int = 1,
                       model: nn.Module | None = None, progress=None) -> list[dict[str, Any]]:
    """Measure one workload (a reference) as fp32 and int8 in torch and in ONNX Runtime, all in this run, 1 thread.

    Rows {path, runtime, size_bytes, accuracy, agreement (argmax vs torch fp32), ms_b1, ms_b32, size_ratio,
    speedup_b1, speedup_b32, vs_torch_fp32_b1, vs_torch_fp32_b32}; ``speedup_*`` are against fp32 in the same
    runtime, ``vs_torch_fp32_*`` against the torch fp32 model (what a user starts from). Paths: torch fp32 / int8
    dynamic / int8 static (graph mode); ONNX Runtime fp32 / int8 dynamic / int8 static QDQ (ORT's calibration) /
    int8 static QDQ with torch's ranges (the torch static model deployed, ``deploy_onnx``). Latencies are timed
    round-robin ``rounds`` times (median of the per-round medians), so drifting load on a shared machine hits every
    path alike. ``model``: a compressed version of the workload's model to use instead of the baseline.
    """
    from .measure import accuracy, latency, predict, size_bytes
    from .workload import resolve_workload

    say = progress or (lambda msg: None)
    sm = resolve_workload(model_name)
    base_model = model if model is not None else sm.model
    x, y, calib = sm.test.x, sm.test.y, sm.calib.x
    b1, b32 = I.head(x, 1), I.head(x, 32)
    ref = predict(base_model, x).argmax(1)
    rows: list[dict[str, Any]] = []
    timers: list = []

    def torch_row(path: str, m: nn.Module | None) -> None:
        if m is None:
            return
        rows.append({"path": path, "runtime": "torch", "size_bytes": size_bytes(m), "accuracy": accuracy(m, x, y),
                     "agreement": float((predict(m, x).argmax(1) == ref).float().mean())})
        timers.append(lambda mrt, m=m: (latency(m, b1, min_run_time=mrt)[0], latency(m, b32, min_run_time=mrt)[0]))

    def ort_row(path: str, blob: bytes) -> None:
        sess = session(blob)
        rows.append({"path": path, "runtime": "onnxruntime", "size_bytes": len(blob),
                     "accuracy": ort_accuracy(sess, x, y),
                     "agreement": float((ort_predict(sess, x).argmax(1) == ref).float().mean())})
        timers.append(lambda mrt, s=sess: (ort_latency(s, b1, min_run_time=mrt)[0],
                                           ort_latency(s, b32, min_run_time=mrt)[0]))

    say(f"{model_name}: quantizing (torch dynamic, torch static, ONNX Runtime dynamic and static)")
    torch_row("fp32", base_model)
    torch_row("int8 dynamic", _or_none(torch_dynamic_int8, base_model, sm))
    static = _or_none(torch_static_int8, base_model, sm)
    torch_row("int8 static", static)
    fp32 = to_onnx(base_model, I.head(x, 2)).SerializeToString()
    ort_row("fp32", fp32)
    ort_row("int8 dynamic", ort_quantize(fp32, OrtDynamicInt8()))
    ort_row("int8 static QDQ", ort_quantize(fp32, OrtStaticInt8(), calib_x=calib))
    if static is not None:
        ort_row("int8 static QDQ, torch ranges", deploy_onnx(static, sm))
    say(f"{model_name}: timing {len(timers)} paths x {max(rounds, 1)} rounds at batch 1 and 32")
    times = [[t(min_run_time) for t in timers] for _ in range(max(rounds, 1))]
    for i, r in enumerate(rows):
        r["ms_b1"] = float(np.median([rnd[i][0] for rnd in times]))
        r["ms_b32"] = float(np.median([rnd[i][1] for rnd in times]))
    base = {r["runtime"]: r for r in rows if r["path"] == "fp32"}
    for r in rows:
        b, t = base[r["runtime"]], base["torch"]
        r["size_ratio"] = r["size_bytes"] / b["size_bytes"]
        r["speedup_b1"] = b["ms_b1"] / r["ms_b1"]
        r["speedup_b32"] = b["ms_b32"] / r["ms_b32"]
        r["vs_torch_fp32_b1"] = t["ms_b1"] / r["ms_b1"]
        r["vs_torch_fp32_b32"] = t["ms_b32"] / r["ms_b32"]
    return rows


def _or_none(fn, *args):
    try:
        return fn(*args)
    except CompressionError:  # a technique that refuses this model: no row
        return None


def fastest_int8(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Which int8 path of a ``runtime_comparison`` is fastest at batch 32, overall and per runtime; whether each
    runtime's fastest int8 is at least as fast as fp32 in that runtime, and whether the fastest int8 path offered
    is at least as fast as the torch fp32 model (``goal_met_vs_torch_fp32``)."""
    int8 = [r for r in rows if r["path"] != "fp32"]
    best = min(int8, key=lambda r: r["ms_b32"])
    per_runtime = {}
    for rt in sorted({r["runtime"] for r in int8}):
        b = min((r for r in int8 if r["runtime"] == rt), key=lambda r: r["ms_b32"])
        per_runtime[rt] = {"path": b["path"], "ms_b32": b["ms_b32"], "speedup_b32": b["speedup_b32"],
                           "at_least_fp32_speed": b["speedup_b32"] >= 1.0}
    return {"runtime": best["runtime"], "path": best["path"], "ms_b32": best["ms_b32"],
            "speedup_b32": best["speedup_b32"], "at_least_fp32_speed": best["speedup_b32"] >= 1.0,
            "vs_torch_fp32_b32": best.get("vs_torch_fp32_b32"),
            "goal_met_vs_torch_fp32": best.get("vs_torch_fp32_b32", 0.0) >= 1.0,
            "per_runtime": per_runtime,
            "goal_met": any(b["at_least_fp32_speed"] for b in per_runtime.values())}


def torch_dynamic_int8(model: nn.Module, sm: Any = None) -> nn.Module:
    """torch's dynamic int8 of ``model`` (a copy): ``compression_core.quantize``'s DynamicInt8Config when that
    family is present, else ``torch.ao.quantization.quantize_dynamic`` on Linear/LSTM directly."""
    import warnings

    try:
        from .quantize import DynamicInt8Config, quantize
    except ImportError:
        from .technique import clone_model

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
            return torch.ao.quantization.quantize_dynamic(clone_model(model).eval(), {nn.Linear, nn.LSTM},
                                                          dtype=torch.qint8)
    return quantize(model, DynamicInt8Config(), sm)


def torch_static_int8(model: nn.Module, sm: Any) -> nn.Module | None:
    """torch's static int8 in graph mode (calibrated on the workload ``sm``'s calib split) via
    ``compression_core.quantize``; None when that family or its StaticInt8Config is not available."""
    try:
        from .quantize import StaticInt8Config, quantize
    except ImportError:
        return None
    return quantize(model, StaticInt8Config(), sm)


def why_runtime_matters(model_name: str = "mnist-lenet300", rows: list[dict[str, Any]] | None = None) -> str:
    """A plain-language explanation, for the Learn page, of why the runtime decides whether int8 is faster,
    with a table measured now on this machine (``runtime_comparison``; pass ``rows`` to reuse a measurement)."""
    rows = rows if rows is not None else runtime_comparison(model_name)
    table = ["| runtime | model | size | accuracy | ms @ batch 1 | ms @ batch 32 | vs fp32 @1 | vs fp32 @32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['runtime']} | {r['path']} | {r['size_bytes'] / 1024:,.0f} KB | {r['accuracy'] * 100:.1f}% "
                     f"| {r['ms_b1']:.3f} | {r['ms_b32']:.3f} | {r['speedup_b1']:.2f}x | {r['speedup_b32']:.2f}x |")
    t = {(r["runtime"], r["path"]): r for r in rows}
    tq, oq = t[("torch", "int8 dynamic")], t[("onnxruntime", "int8 dynamic")]
    best = fastest_int8(rows)
    return "\n".join([
        "### Why the runtime matters for int8",
        "",
        "Quantizing to int8 makes the weights 4x smaller. Whether it also makes the model *faster* depends on "
        "the code that runs it. An int8 model only wins if the runtime has int8 kernels that beat its fp32 ones "
        "on this CPU, and if the cost of converting activations to int8 and back is small next to the saved work.",
        "",
        "Fast int8 matrix multiplication on x86 relies on an int8 dot-product instruction (VNNI: `vpdpbusd`), "
        "which multiplies 8-bit numbers and adds them straight into 32-bit sums. CPUs with only AVX2 have to use "
        "`vpmaddubsw`, which adds pairs into 16-bit sums first (it can overflow, which is why ONNX Runtime offers "
        "`reduce_range`, 7-bit weights) and needs extra instructions to widen them, so int8 is barely cheaper "
        "than fp32 there, and the quantize/dequantize steps around each layer can make it slower. Runtimes also "
        "differ in overhead: torch runs a dynamic int8 Linear as its own call that finds the activations' range, "
        "quantizes them, multiplies and dequantizes, with Python and dispatcher work between layers, which "
        "dominates for small layers at batch 1; ONNX Runtime plans the whole graph once when the session starts "
        "and fuses quantize, multiply and dequantize into its kernels.",
        "",
        ("This machine's CPU has an int8 dot-product instruction, so the int8 arithmetic itself is cheap here: "
         "the differences below come mostly from each runtime's overheads, and on an AVX2-only CPU int8 gains "
         "less still." if cpu_has_int8_dot() else
         "This machine's CPU has no int8 dot-product instruction (AVX2 only): exactly the case where the "
         "runtime decides whether int8 pays off."),
        "",
        f"Measured just now on this machine ({cpu_summary()}), `{model_name}`, 1 thread, median latency; "
        "'vs fp32' is the speed-up over fp32 in the same runtime (above 1 = faster):",
        "",
        *table,
        "",
        f"Here torch's dynamic int8 is {_times(tq['speedup_b1'])} fp32 at batch 1 and {_times(tq['speedup_b32'])} "
        f"fp32 at batch 32; ONNX Runtime's dynamic int8 is {_times(oq['speedup_b1'])} its fp32 at batch 1 and "
        f"{_times(oq['speedup_b32'])} its fp32 at batch 32, and {tq['ms_b1'] / oq['ms_b1']:.1f}x faster than torch's "
        f"int8 at batch 1. The fastest int8 path at batch 32 is {best['runtime']} {best['path']} "
        f"({best['ms_b32']:.3f} ms, {_times(best['speedup_b32'])} fp32 in {best['runtime']}). "
        "The lesson: size and accuracy travel with the model, speed does not: "
        "measure int8 in the runtime you will deploy with.",
        "",
        "(The machine is shared with other work, so absolute times are noisy; ratios are measured in one run.)",
    ])


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x as fast as" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"


__all__ = ["OrtDynamicInt8", "OrtModule", "OrtQuantConfig", "OrtStaticInt8", "RUNTIMES", "cpu_flags",
           "cpu_has_int8_dot", "cpu_summary", "deploy_onnx", "deploy_proto", "fastest_engine", "fastest_int8",
           "gemm_to_matmul", "layer_nodes", "measure_in", "measure_ort", "onnx_layer_stats", "ort_accuracy",
           "ort_int4", "ort_int4_step", "ort_int8_step", "ort_latency", "ort_predict", "ort_quantize",
           "resolve_reduce_range", "runtime_comparison", "session", "torch_dynamic_int8", "torch_static_int8",
           "why_runtime_matters"]
