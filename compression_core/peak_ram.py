"""Peak inference RAM: the bytes a model holds while it answers one batch (its weights as they sit in memory, the
input batch and the largest set of intermediate tensors alive at once).

Why: it is the first number an embedded engineer asks for (Edge Impulse's EON Tuner shows RAM beside flash and
latency), and neither the file size (weights only, as stored) nor FLOPs says it.

- torch: weights = every distinct tensor storage the model owns (parameters, buffers, tensors kept as attributes,
  torch.ao's packed int8 weights at their int8 size, CSR parts; a pruned layer as shipped: its mask folded into the
  weight, on a copy, so neither the mask nor the original is counted); the
  activations are followed op by op with a ``TorchDispatchMode``: each new storage an op returns is counted until
  the last tensor using it is freed, so the figure is the peak of live bytes in the forward pass (allocator
  slack and kernel scratch buffers, e.g. im2col, are not seen).
- ONNX Runtime: the graph ORT actually runs (its own ``ORT_ENABLE_ALL`` rewrite for this machine, written out and
  read back: fused nodes, NCHWc convolutions with their reorders); weights = its initializers; activations = a
  liveness walk in node order with every value's real size (one run with every value exposed as an output): a
  value lives from the node that makes it to its last consumer. Not counted: ORT's fixed cost (its code, thread
  pool and kernel registries, ~10 MB whatever the model) and its per-session overhead (kernel objects, arena slack,
  first-run buffers: 0.1 to 1.5 MB on the sample models).

``tests/test_peak_ram.py`` checks both against measurements that share no code with this module (torch.profiler's
allocator events; a subprocess's peak RSS, VmHWM, for ONNX Runtime).
"""

from __future__ import annotations

import copy
import os
import tempfile
import weakref
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from . import inputs as I
from .io import fold_masks, has_mask
from .ort_session import as_proto, feed, session


# ------------------------------------------------------------------------------------------------- torch
def _storage_parts(t: torch.Tensor) -> list[tuple[int, int]]:
    """(key, bytes) of the memory behind ``t``: its storage, or the parts of a sparse/packed tensor."""
    if t.layout == torch.sparse_csr:
        return [p for part in (t.crow_indices(), t.col_indices(), t.values()) for p in _storage_parts(part)]
    if t.layout == torch.sparse_coo:
        return [p for part in (t._indices(), t._values()) for p in _storage_parts(part)]
    try:
        s = t.untyped_storage()
        return [(int(s.data_ptr()), int(s.nbytes()))] if s.nbytes() else []
    except (RuntimeError, NotImplementedError):  # a tensor without a plain storage (e.g. a quantized one)
        return [(id(t), int(t.numel() * t.element_size()))] if t.numel() else []


def _packed_weights(module: nn.Module) -> list[torch.Tensor]:
    """The tensors behind torch.ao's packed int8 weights (not parameters or buffers, so counted separately)."""
    out: list[torch.Tensor] = []
    wb = getattr(module, "_weight_bias", None)
    if isinstance(getattr(module, "_packed_params", None), nn.Module):  # a Linear's packed child holds them
        return out
    if callable(wb):
        try:
            got = wb()
        except Exception:
            return out
        if isinstance(got, dict):  # dynamic LSTM/GRU: {"weight": {...}, "bias": {...}}
            got = [*got.get("weight", {}).values(), *got.get("bias", {}).values()]
        out += [t for t in (got if isinstance(got, (tuple, list)) else [got]) if isinstance(t, torch.Tensor)]
    return out


def _weight_storages(model: nn.Module) -> dict[int, int]:
    """{storage key: bytes} of every distinct tensor the model holds (shared and tied tensors once)."""
    seen: dict[int, int] = {}
    for module in model.modules():
        tensors = [*module.parameters(recurse=False), *module.buffers(recurse=False),
                   *(v for v in vars(module).values() if isinstance(v, torch.Tensor)), *_packed_weights(module)]
        for t in tensors:
            for key, n in _storage_parts(t):
                seen[key] = max(seen.get(key, 0), n)
    return seen


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every distinct tensor the model holds in memory (shared and tied tensors once)."""
    return sum(_weight_storages(model).values())


class _LiveBytes(TorchDispatchMode):
    """Counts the storages ops create (not those held before: weights, the input) while a tensor uses them."""

    def __init__(self, held: set[int]) -> None:
        super().__init__()
        self.held = held
        self.refs: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.live = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        self.refs[key] -= 1
        if self.refs[key] == 0:
            del self.refs[key]
            self.live -= self.size.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            for key, n in _storage_parts(t):
                if key in self.held:
                    continue
                if key not in self.refs:
                    self.refs[key] = 0
                    self.size[key] = n
                    self.live += n
                    self.peak = max(self.peak, self.live)
                elif n > self.size[key]:  # resized in place
                    self.live += n - self.size[key]
                    self.size[key] = n
                    self.peak = max(self.peak, self.live)
                self.refs[key] += 1
                weakref.finalize(t, self._release, key)
        return out


def _ort_module(model: nn.Module) -> nn.Module | None:
    return model if getattr(model, "is_onnx_runtime_model", False) else None


@torch.no_grad()
def torch_peak_ram(model: nn.Module, example: Any) -> dict[str, int]:
    """{weights, inputs, activations, total} bytes of one forward pass of ``model`` on ``example`` in eval mode
    (float inputs cast to the model's dtype first, as every measurement does). A model that runs in ONNX Runtime
    (``OrtModule``) is measured as its ONNX graph (``ort_peak_ram``)."""
    ort = _ort_module(model)
    if ort is not None:
        return ort_peak_ram(ort.onnx_bytes, example)
    x = I.cast_floats(example, I.input_dtype(model))
    args, kwargs = I.example_args(x)
    given = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    held = {k for t in given for k, _ in _storage_parts(t)}  # a batch may be a view into a larger split
    if any(has_mask(m, getattr(h, "_tensor_name", "")) for m in model.modules() for h in m._forward_pre_hooks.values()):
        model = fold_masks(copy.deepcopy(model))  # as shipped: a pruned layer holds its zeros, not weight x mask
    weights = _weight_storages(model)
    was_training = model.training
    model.eval()
    mode = _LiveBytes(set(weights) | held)
    try:
        with mode:
            out = model(*args, **kwargs)
        del out
    finally:
        model.train(was_training)
    in_bytes = sum(t.numel() * t.element_size() for t in given)
    total_w = sum(weights.values())
    return {"weights": total_w, "inputs": in_bytes, "activations": mode.peak, "total": total_w + in_bytes + mode.peak}


# -------------------------------------------------------------------------------------------- ONNX Runtime
def _ort_optimized(proto):
    """The graph ONNX Runtime actually runs (its ``ORT_ENABLE_ALL`` rewrite for this machine: fused nodes, NCHWc
    convolutions with their reorders), or the graph as given when the runtime cannot write it out."""
    # lazy: onnx and onnxruntime each take about a second to import, and only ONNX work needs them
    import onnx
    import onnxruntime as ort  # lazy (above)

    with tempfile.TemporaryDirectory(prefix="peak-ram-") as folder:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        try:
            ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
            return onnx.load_model(so.optimized_model_filepath)
        except Exception:
            return proto


def ort_peak_ram(onnx_model: Any, example: Any) -> dict[str, int]:
    """{weights, inputs, activations, total} bytes of one ONNX Runtime run of ``onnx_model`` (bytes, a path or a
    ModelProto) on ``example``: the initializers and the liveness walk described in the module docstring, over the
    graph ONNX Runtime runs after its own optimisations."""
    # lazy: onnx takes about a second to import, and only ONNX work needs it
    import numpy as np
    import onnx  # lazy (above)
    from onnx import numpy_helper  # lazy (above)

    given = as_proto(onnx_model)
    proto = onnx.ModelProto()
    proto.CopyFrom(_ort_optimized(given))
    g = proto.graph
    weights = sum(int(numpy_helper.to_array(t).nbytes) for t in g.initializer)
    weights += sum(int(numpy_helper.to_array(n.attribute[0].t).nbytes) for n in g.node
                   if n.op_type == "Constant" and n.attribute and n.attribute[0].type == onnx.AttributeProto.TENSOR)
    const = {t.name for t in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    graph_in = {i.name for i in g.input if i.name not in const}
    keep = {o.name for o in g.output}  # the graph's outputs live to the end
    for name in [o for n in g.node if n.op_type != "Constant" for o in n.output if o]:
        if name not in keep:
            g.output.append(onnx.ValueInfoProto(name=name))  # every value an output: its real size, type left to ORT
    sess = session(proto.SerializeToString())
    fed = feed(sess, example)
    size = {o.name: int(np.asarray(v).nbytes) for o, v in zip(sess.get_outputs(), sess.run(None, fed))}
    in_bytes = sum(int(a.nbytes) for k, a in fed.items() if k in graph_in)
    last_use: dict[str, int] = {}
    for i, n in enumerate(g.node):
        for name in n.input:
            last_use[name] = i
    live = peak = 0
    alive: dict[str, int] = {}
    for i, n in enumerate(g.node):
        if n.op_type == "Constant":
            continue
        for o in n.output:
            if o and o not in alive:
                alive[o] = size.get(o, 0)
                live += alive[o]
        peak = max(peak, live)
        for name in {*n.input, *n.output}:
            if name in alive and name not in keep and last_use.get(name, -1) <= i:
                live -= alive.pop(name)
    return {"weights": weights, "inputs": in_bytes, "activations": peak, "total": weights + in_bytes + peak}


def peak_ram(model: Any, example: Any) -> int:
    """Peak inference RAM in bytes of ``model`` on the batch ``example``: a torch module (an ``OrtModule`` as its
    ONNX graph), or an ONNX model (bytes, a path or a ModelProto) in ONNX Runtime."""
    if isinstance(model, nn.Module):
        return torch_peak_ram(model, example)["total"]
    return ort_peak_ram(model, example)["total"]


__all__ = ["ort_peak_ram", "peak_ram", "torch_peak_ram", "weight_bytes"]
