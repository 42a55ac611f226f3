"""The ONNX Runtime engine: what a technique run with ``engine="onnxruntime"`` returns (an ``OrtModule``, an
``nn.Module`` whose state is the .onnx file and whose forward runs an ORT session, so measure, recipes, bundles and
the dashboard handle it like any model), and the backends the quantize handlers call for it. The handlers choose
the layers (the same ones the torch engine would quantize); the backends export the float model, find those
layers' ONNX nodes and quantize them in ONNX Runtime. Nothing here imports the quantize package."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from . import inputs as I
from .errors import CompressionError
from .measure import layer_stats
from .onnx_io import export_float, strip_metadata
from .ort_nodes import gemm_to_matmul, onnx_layer_stats, selected_nodes
from .ort_quantize import ort_int4, ort_quantize
from .ort_session import NP_TYPES, OnnxLike, as_proto, feed, session, to_array


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
            self._inputs = [(i.name, NP_TYPES.get(i.type)) for i in sess.get_inputs()]
            self._session = sess
        return self._session

    def forward(self, *args, **kwargs) -> torch.Tensor:
        sess = self.session()
        if len(args) == 1 and not kwargs and len(self._inputs) == 1:  # the common case, kept lean (batch 1)
            name, want = self._inputs[0]
            arr = args[0].detach().cpu().numpy()
            if want is not None and arr.dtype != want:
                arr = to_array(args[0], next(i.type for i in sess.get_inputs()))
            return torch.from_numpy(sess.run(None, {name: arr})[0])
        names = [n for n, _ in self._inputs]
        batch = dict(zip(names, args))
        batch.update(kwargs)
        return torch.from_numpy(np.asarray(sess.run(None, feed(sess, batch))[0]))

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


def example_batch(wl, n: int = 2):
    """A batch of ``n`` inputs from the workload (calib, else test, else train split)."""
    for split in ("calib", "test", "train"):
        s = getattr(wl, split, None) if wl is not None else None
        if s is not None and len(s) > 0:
            return I.head(s.x, n)
    raise CompressionError("data: exporting to ONNX needs example inputs; pass the workload")


def ort_int8_step(model: nn.Module, layers: list[str], ctx, technique: str, method: Literal["dynamic", "static"],
                  calib_x=None, per_channel: bool = True) -> OrtModule:
    """Dynamic or static int8 of ``layers`` (chosen by the handler, masks already folded) realised in ONNX Runtime:
    the float model exported, the layers' nodes quantized by ORT (static: calibrated on ``calib_x``, the same
    calibration split the torch engine uses). Returns an ``OrtModule``."""
    dynamic = method == "dynamic"
    # dynamic: Linear-like and recurrent nodes (ORT's dynamic int8 quantizes MatMul, not Gemm); static: weighted ops
    op_types = ("MatMul", "Gemm", "LSTM", "GRU") if dynamic else ("Conv", "Gemm", "MatMul")
    ctx.report(0.1, "exporting the float model to ONNX")
    proto = export_float(model, example_batch(ctx.data), keep_metadata=True)
    if dynamic:
        gemm_to_matmul(proto)
    nodes = selected_nodes(proto, layers, op_types, technique, model)
    ctx.report(0.4, f"ONNX Runtime {'dynamic' if dynamic else 'static QDQ'} int8 of {len(layers)} layers")
    # static: ORT calibrates with its own min-max observer (torch's histogram observer has no ORT twin; ORT's
    # entropy and percentile calibrators need equal batches and more samples than a calibration split has here)
    blob = ort_quantize(proto, method, calib_x=calib_x, nodes=nodes, op_types=op_types, per_channel=per_channel,
                        calibrate_method="minmax")
    ctx.report(1.0, "done")
    return OrtModule(_stripped(blob), storage="int8", bits=8, source=model)


def ort_int4_step(model: nn.Module, bits: dict[str, int], ctx, group_size: int | None, symmetric: bool) -> OrtModule:
    """Weight-only int4 of the Linear layers ``bits`` names ({layer: 4 or 8}, chosen by the handler) realised in
    ONNX Runtime: exported as MatMul and quantized to ``MatMulNBits`` (block = ``group_size``, 32 when per channel),
    8-bit overrides as 8-bit ``MatMulNBits``. Returns an ``OrtModule``."""
    ctx.report(0.1, "exporting the float model to ONNX (Linear layers as MatMul)")
    proto = export_float(model, example_batch(ctx.data), keep_metadata=True)
    gemm_to_matmul(proto)
    block = group_size or 32
    blob: OnnxLike = proto
    for b in (4, 8):
        chosen = [n for n, v in bits.items() if v == b]
        if chosen:
            ctx.report(0.5 if b == 4 else 0.8, f"MatMulNBits int{b} of {len(chosen)} layers (block {block})")
            blob = ort_int4(blob, block_size=block, symmetric=symmetric, bits=b,
                            nodes=selected_nodes(as_proto(blob), chosen, ("MatMul",), "quantize_int4"))
    ctx.report(1.0, "done")
    return OrtModule(_stripped(blob), storage="int4", bits=4, source=model)


def _stripped(onnx_model: OnnxLike) -> bytes:
    proto = as_proto(onnx_model)
    strip_metadata(proto)
    return proto.SerializeToString()


__all__ = ["OrtModule", "example_batch", "ort_int4_step", "ort_int8_step"]
