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
  read back: fused nodes, NCHWc convolutions with their reorders); weights = its initializers; activations = ORT's
  own memory plan replayed in node order with every value's real size (one run with every value exposed as an
  output): a value takes the buffer of an earlier dead value of the same shape and type when there is one (ORT's
  ``enable_mem_reuse``), so that buffer stays held across the gap between the two (on GPT-2's tiny-lm at batch 8
  this is 6.75 MB where freeing each value after its last use would be 2.4 MB); Reshape-like ops share their
  input's buffer; the buffers are served by a model of ORT's CPU arena (best fit, regions never given back, a page
  counted once written: 7.35 MB there). Not counted: ORT's fixed cost (its code, thread pool and kernel
  registries, ~10 MB whatever the model), its per-session overhead (kernel objects, first-run buffers: 0.1 to
  1.5 MB on the sample models) and kernels' scratch space.

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
    ModelProto) on ``example``: the initializers and ORT's memory plan and arena as described in the module
    docstring, over the graph ONNX Runtime runs after its own optimisations."""
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
    size: dict[str, tuple[int, tuple]] = {}
    for o, v in zip(sess.get_outputs(), sess.run(None, fed)):
        a = np.asarray(v)
        size[o.name] = (int(a.nbytes), (a.dtype.itemsize, *a.shape))
    in_bytes = sum(int(a.nbytes) for k, a in fed.items() if k in graph_in)
    nodes = [n for n in g.node if n.op_type != "Constant"]
    peak = _planned_peak(nodes, size, keep)  # the size key: (element bytes, *shape), ORT's "same shape and type"
    return {"weights": weights, "inputs": in_bytes, "activations": peak, "total": weights + in_bytes + peak}


# ONNX Runtime's CPU kernels whose output is declared an alias of input 0 (the same buffer, no copy)
_ALIAS_OPS = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity"})


def _planned_peak(nodes, size: dict[str, tuple[int, tuple]], keep: set[str]) -> int:
    """Peak resident bytes of the buffers ONNX Runtime's allocation plan holds while ``nodes`` run in order.

    ORT does not simply free a value after its last consumer: its planner (``enable_mem_reuse``, on by default)
    gives a new value the buffer of an earlier, dead value of the same shape and element size (the most recently
    freed first), and that buffer then stays allocated from its first value to its last one's last use, across
    the gap between them. On a transformer the same-shaped tensors of block 1 (the QKV projection, attention
    scores, MLP activations) are kept for block 2 and 3, which is most of the RAM of a GPT-2 run. Reshape-like
    ops share their input's buffer. Values of unknown size (not produced in the run) take no memory. The buffers
    are then served by ORT's arena (``_arena_resident``)."""
    last: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for name in n.input:
            last[name] = i
    buf_of: dict[str, int] = {}  # value -> buffer id
    bufs: list[list[int]] = []  # [bytes, first node, last node, live values]
    free: list[int] = []  # dead buffers, most recently freed last
    shape_of: dict[int, tuple] = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if not o or o not in size or size[o][0] == 0:
                continue
            nbytes, key = size[o]
            if n.op_type in _ALIAS_OPS and n.input and n.input[0] in buf_of:
                b = buf_of[n.input[0]]
            else:
                b = next((f for f in reversed(free) if shape_of[f] == key), None)
                if b is None:
                    b = len(bufs)
                    bufs.append([nbytes, i, i, 0])
                    shape_of[b] = key
                else:
                    free.remove(b)
            buf_of[o] = b
            bufs[b][3] += 1
            bufs[b][2] = max(bufs[b][2], i if o not in keep else len(nodes))
        for name in {*n.input, *n.output}:
            if name in buf_of and name not in keep and last.get(name, -1) <= i:
                b = buf_of.pop(name)
                bufs[b][2] = max(bufs[b][2], i)
                bufs[b][3] -= 1
                if bufs[b][3] == 0:
                    free.append(b)
    return _arena_resident([(nbytes, first, end) for nbytes, first, end, _ in bufs])


_PAGE = 4096
_ARENA_FIRST_REGION = 1 << 20  # ORT's CPU arena (BFCArena): a 1 MiB first region, each further one twice the last


def _arena_resident(bufs: list[tuple[int, int, int]]) -> int:
    """Resident bytes of ORT's CPU memory arena (on by default) after serving ``bufs`` ([bytes, first node, last
    node]): a best-fit allocator over regions it never gives back, sizes rounded up to 256 bytes, a free chunk
    split when it is at least twice the request, neighbours merged when freed. A page counts once written, so
    the figure is the pages any buffer ever used: the live peak plus the holes that best-fit leaves."""
    order = sorted([(first, 1, b) for b, (_, first, _) in enumerate(bufs)] +
                   [(end + 1, 0, b) for b, (_, _, end) in enumerate(bufs)])  # frees before allocations
    chunks: list[list[int]] = []  # [region, start, size, in use], kept in address order
    at: dict[int, list[int]] = {}
    touched: set[int] = set()
    regions, grow = 0, _ARENA_FIRST_REGION
    for _, alloc, b in order:
        if not alloc:
            c = at.pop(b)
            c[3] = 0
            i = chunks.index(c)
            for j in (i + 1, i):  # merge with a free neighbour in the same region
                if 0 < j < len(chunks) and not chunks[j - 1][3] and not chunks[j][3] \
                        and chunks[j - 1][0] == chunks[j][0]:
                    chunks[j - 1][2] += chunks.pop(j)[2]
            continue
        n = max(256, -(-bufs[b][0] // 256) * 256)
        fits = [c for c in chunks if not c[3] and c[2] >= n]
        if fits:
            c = min(fits, key=lambda c: (c[2], c[0], c[1]))
        else:
            size = grow
            while size < n:
                size *= 2
            grow = size * 2
            c = [regions, 0, size, 0]
            regions += 1
            chunks.append(c)
        if c[2] >= 2 * n:
            i = chunks.index(c)
            chunks.insert(i + 1, [c[0], c[1] + n, c[2] - n, 0])
            c[2] = n
        c[3] = 1
        at[b] = c
        touched.update((c[0], p) for p in range(c[1] // _PAGE, (c[1] + n - 1) // _PAGE + 1))  # the bytes written
    return len(touched) * _PAGE


def peak_ram(model: Any, example: Any) -> int:
    """Peak inference RAM in bytes of ``model`` on the batch ``example``: a torch module (an ``OrtModule`` as its
    ONNX graph), or an ONNX model (bytes, a path or a ModelProto) in ONNX Runtime."""
    if isinstance(model, nn.Module):
        return torch_peak_ram(model, example)["total"]
    return ort_peak_ram(model, example)["total"]


__all__ = ["ort_peak_ram", "peak_ram", "torch_peak_ram", "weight_bytes"]
