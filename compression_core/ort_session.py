"""ONNX Runtime sessions on the CPU (1 intra-op thread by default) and what runs through them: the feed built from
a batch, predictions, accuracy and latency timed like torch's."""

from __future__ import annotations

import os
from typing import Any, Union

import numpy as np
import torch

from . import inputs as I
from .errors import CompressionError

OnnxLike = Union[bytes, str, os.PathLike, Any]  # serialized bytes, a .onnx path, or an onnx.ModelProto

NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
            "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_,
            "tensor(uint8)": np.uint8, "tensor(int8)": np.int8}


def as_proto(onnx_model: OnnxLike):
    """An ``onnx.ModelProto`` of serialized bytes, a .onnx path (external data loaded too) or a ModelProto."""
    import onnx  # lazy: onnx takes about a second to import and only ONNX work needs it

    if isinstance(onnx_model, bytes):
        return onnx.ModelProto.FromString(onnx_model)
    if isinstance(onnx_model, (str, os.PathLike)):
        return onnx.load_model(str(onnx_model))
    return onnx_model


def as_bytes(onnx_model: OnnxLike) -> bytes:
    """The serialized model (a path's external data inlined)."""
    if isinstance(onnx_model, bytes):
        return onnx_model
    if isinstance(onnx_model, (str, os.PathLike)):
        return as_proto(onnx_model).SerializeToString()  # loads external data too
    return onnx_model.SerializeToString()


def session(onnx_model: OnnxLike, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` on the CPU with ``threads`` intra-op threads (default 1), one
    inter-op thread, sequential execution and all graph optimisations."""
    import onnxruntime as ort  # lazy: optional at run time (torch-only use and the dashboard work without it)

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only
    src = str(onnx_model) if isinstance(onnx_model, (str, os.PathLike)) else as_bytes(onnx_model)
    try:
        return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CompressionError(f"onnxruntime: cannot load the model: {first[:300]}") from e


def to_array(t: torch.Tensor, onnx_type: str) -> np.ndarray:
    """A tensor as the numpy array the session input expects (float to its float type; integer ids stay exact)."""
    arr = t.detach().cpu().numpy()
    want = NP_TYPES.get(onnx_type)
    if want is None or arr.dtype == want:
        return arr
    if np.issubdtype(arr.dtype, np.integer) and np.issubdtype(want, np.floating):
        raise CompressionError(f"onnxruntime: the model takes {onnx_type} but the input holds integers "
                               "(token ids are never cast to a float type)")
    return arr.astype(want, copy=False)


def feed(sess, x) -> dict[str, np.ndarray]:
    """The session's inputs from a batch: a tensor (the one input) or a dict of tensors matched by name (keys the
    model does not take are left out); floats cast to each input's own float type, integer ids kept integer."""
    inputs = sess.get_inputs()
    if I.is_dict(x):
        missing = [i.name for i in inputs if i.name not in x]
        if missing:
            raise CompressionError(f"onnxruntime: the model takes inputs {[i.name for i in inputs]}, the batch has "
                                   f"{list(x)}")
        return {i.name: to_array(x[i.name], i.type) for i in inputs}
    return {inputs[0].name: to_array(x, inputs[0].type)}


def ort_predict(sess, x, batch_size: int = 1024) -> torch.Tensor:
    """Outputs (float32) of the session on ``x`` (a tensor or a dict of tensors), batched."""
    n = I.n_items(x)
    outs = [torch.from_numpy(np.asarray(sess.run(None, feed(sess, I.take(x, slice(i, i + batch_size))))[0])
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
    from torch.utils import benchmark  # lazy: ~0.3 s to import, and only timing needs it

    fed = feed(sess, example)
    for _ in range(warmup):
        sess.run(None, fed)
    timer = benchmark.Timer(stmt="sess.run(None, feed)", globals={"sess": sess, "feed": fed}, num_threads=1)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return m.median * 1e3, m.iqr * 1e3, len(m.times) * m.number_per_run


__all__ = ["NP_TYPES", "OnnxLike", "as_bytes", "as_proto", "feed", "ort_accuracy", "ort_latency", "ort_predict",
           "session", "to_array"]
