"""ONNX Runtime's own quantizers on an exported .onnx file: int8 dynamic (``quantize_dynamic``), int8 static QDQ
calibrated on data (``quantize_static``; Jacob et al. 2018, "Quantization and Training of Neural Networks for
Efficient Integer-Arithmetic-Only Inference") and weight-only int4/int8 ``MatMulNBits``.

These work on files, not on configs: a technique reaches them through ``engine="onnxruntime"`` on the registered
int8 and int4 configs (``compression_core.ort.engine``), and the CLI's ``export --int8`` on an exported file.

``reduce_range`` (7-bit weights) defaults to "auto": on x86 without VNNI the u8 x s8 multiply-add (``vpmaddubsw``)
sums pairs into int16 and can saturate; 7-bit weights avoid that (FACTS.md: 11% output error with ORT's
defaults vs 1.8% with per_channel + reduce_range on such a CPU). With VNNI (``vpdpbusd``) it is not needed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from . import inputs as I
from .cpu import cpu_has_int8_dot
from .errors import CompressionError
from .ort_nodes import gemm_to_matmul, share_transposed
from .ort_session import OnnxLike, as_proto

# Linear-like and recurrent layers; convolutions stay float: ORT's dynamic ConvInteger was 8x slower than its fp32
# Conv at batch 32 on digits-cnn (use static int8 for convs)
DYNAMIC_OP_TYPES = ("MatMul", "Gemm", "LSTM", "GRU", "Attention")
# the layers with weights; LayerNorm/Softmax/GELU/Add stay float (quantizing them too cost the ViT argmax agreement
# with fp32: 98.9% vs 99.4% measured)
STATIC_OP_TYPES = ("Conv", "Gemm", "MatMul")
_CALIBRATORS = ("minmax", "entropy", "percentile")
_QUANTIZED_OPS = ("QuantizeLinear", "DequantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv",
                  "QLinearMatMul", "DynamicQuantizeLinear")


def resolve_reduce_range(value: bool | str) -> bool:
    """``"auto"`` -> True on CPUs without int8 dot-product instructions (see the module docstring)."""
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


@contextlib.contextmanager
def _quiet_logging():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # ORT's quantizers log advice through the root logger
    try:
        yield
    finally:
        root.setLevel(level)


def ort_quantize(onnx_model: OnnxLike, method: Literal["dynamic", "static"], calib_x=None,
                 nodes: list[str] | None = None, *, op_types: tuple[str, ...] | None = None, per_channel: bool = True,
                 reduce_range: bool | Literal["auto"] = "auto", weight_type: Literal["qint8", "quint8"] = "qint8",
                 activation_type: Literal["quint8", "qint8"] = "quint8",
                 calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax", calib_samples: int = 512,
                 calib_batch_size: int = 64) -> bytes:
    """The serialized int8 .onnx model of ``onnx_model`` (an fp32 export): ``method`` "dynamic" (int8 weights per
    output channel, activations quantized per call) or "static" (QDQ int8 weights and activations, scales calibrated
    on ``calib_x``: the calibration split's inputs, a tensor or a dict named like the model's inputs; at most
    ``calib_samples`` of them, ``calib_batch_size`` per call). ``op_types``: the op types to quantize (None: the
    method's ``DYNAMIC_OP_TYPES`` / ``STATIC_OP_TYPES``). ``nodes``: only these ONNX nodes (a recipe's chosen layers,
    ``layer_nodes``); None = every node of ``op_types``. The input is not modified."""
    from onnxruntime import quantization as q  # lazy: optional at run time, as in ort_session.session

    if method not in ("dynamic", "static"):
        raise CompressionError(f"method: ONNX Runtime int8 is 'dynamic' or 'static', got {method!r}")
    if calibrate_method not in _CALIBRATORS:
        raise CompressionError(f"calibrate_method: choose one of {', '.join(_CALIBRATORS)}, got {calibrate_method!r}")
    what = f"onnxruntime {method} int8"
    proto = as_proto(onnx_model)
    fp32 = all(i.type.tensor_type.elem_type not in (10, 11, 16) for i in proto.graph.input)
    if not fp32:
        raise CompressionError(f"{what}: ONNX Runtime int8 quantization needs an fp32 model; export the "
                               "float32 model (not fp16/bf16)")
    if any(n.op_type in _QUANTIZED_OPS for n in proto.graph.node):
        raise CompressionError(f"{what}: the model is already quantized; quantize the fp32 export")
    if method == "static" and (calib_x is None or I.n_items(calib_x) == 0):
        raise CompressionError(f"calib_x: {what} needs calibration data (the calibration split's inputs)")
    reduce = resolve_reduce_range(reduce_range)
    ops = list(op_types or (DYNAMIC_OP_TYPES if method == "dynamic" else STATIC_OP_TYPES))
    qtype = {"qint8": q.QuantType.QInt8, "quint8": q.QuantType.QUInt8}
    try:
        with tempfile.TemporaryDirectory(prefix="ortq-") as tmp, contextlib.redirect_stdout(io.StringIO()), \
                _quiet_logging():
            src, out = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            try:
                q.quant_pre_process(proto, str(src), skip_symbolic_shape=False)
            except Exception:  # pre-processing only helps; quantize the export as it is if it fails
                src.write_bytes(proto.SerializeToString())
            if nodes is not None:  # pre-processing renames the nodes it fuses "<name>/<fusion>"
                names = [n.name for n in as_proto(src.read_bytes()).graph.node]
                chosen = {m for m in names for n in nodes if m == n or m.startswith(n + "/")}
                nodes = sorted(chosen | {m + suffix for m in chosen for suffix in ("_MatMul", "_Add")})
            if method == "dynamic":
                q.quantize_dynamic(str(src), str(out), op_types_to_quantize=ops, per_channel=per_channel,
                                   reduce_range=reduce, weight_type=qtype[weight_type], nodes_to_quantize=nodes)
            else:
                cx = I.take(calib_x, slice(0, calib_samples))
                n = I.n_items(cx)
                bs = min(calib_batch_size, n)
                if calibrate_method != "minmax":  # ORT's histogram collectors need equal-sized batches
                    cx = I.take(cx, slice(0, n - n % bs))
                reader = _CalibReader([i.name for i in proto.graph.input], cx, bs)
                calibrator = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                              "percentile": q.CalibrationMethod.Percentile}[calibrate_method]
                q.quantize_static(str(src), str(out), reader, quant_format=q.QuantFormat.QDQ,
                                  op_types_to_quantize=ops, per_channel=per_channel, nodes_to_quantize=nodes,
                                  reduce_range=reduce, activation_type=qtype[activation_type],
                                  weight_type=qtype[weight_type], calibrate_method=calibrator)
            return _stored_once(out.read_bytes())
    except CompressionError:
        raise
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CompressionError(f"{what}: ONNX Runtime quantization failed: {type(e).__name__}: "
                               f"{first[:300]}") from e


def _stored_once(blob: bytes) -> bytes:
    """The quantized file with a weight that pre-processing's constant folding stored twice (tied weights: a table
    and its transpose, GPT-2's embedding and lm_head) stored once (``share_transposed``)."""
    proto = as_proto(blob)
    return proto.SerializeToString() if share_transposed(proto) else blob


def ort_int4(onnx_model: OnnxLike, block_size: int = 32, symmetric: bool = True, nodes: list[str] | None = None,
             bits: int = 4) -> bytes:
    """Weight-only int4 (or int8) of the MatMul nodes with constant weights, as ONNX Runtime's ``MatMulNBits``
    (``MatMulNBitsQuantizer``, block-wise scales, accuracy level 4: int8 activations inside the kernel). Gemm nodes
    are first rewritten as MatMul + Add. ``nodes``: only these (None = every MatMul with a constant weight)."""
    # lazy: onnxruntime is optional at run time, as in ort_session.session
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    proto = as_proto(onnx_model)
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


__all__ = ["DYNAMIC_OP_TYPES", "STATIC_OP_TYPES", "ort_int4", "ort_quantize", "resolve_reduce_range"]
