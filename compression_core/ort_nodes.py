"""What an exported ONNX graph holds, as the library's layers see it: which nodes a torch layer became (from the
exporter's module scopes, or from its weight where a BatchNorm was folded in), Gemm rewritten as MatMul + Add (what
ONNX Runtime's MatMul quantizers take), and one stats row per stored weight tensor."""

from __future__ import annotations

import ast

import numpy as np
import torch
from torch import nn

from .errors import CompressionError
from .measure import LayerStats, effective_weight
from .ort_session import OnnxLike, as_proto


def _scopes(node) -> list[str]:
    """The module path of an exported node (torch.onnx's ``pkg.torch.onnx.name_scopes`` metadata)."""
    for kv in node.metadata_props:
        if kv.key == "pkg.torch.onnx.name_scopes":
            try:
                return [str(v) for v in ast.literal_eval(kv.value)]
            except (ValueError, SyntaxError):
                return []
    return []


def _node_weight(node, inits: dict) -> np.ndarray | None:
    """The constant weight of a Conv/Gemm/MatMul node as (out, fan_in), or None."""
    from onnx import helper, numpy_helper  # lazy: onnx takes about a second to import

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
    from onnx import helper, numpy_helper  # lazy: onnx takes about a second to import

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


def share_transposed(proto) -> int:
    """Store a weight once when the graph holds it twice, as a matrix and as its transpose (what constant folding
    makes of tied weights: GPT-2's embedding table read by a Gather and, transposed, by the output MatMul): the
    transposed copy becomes a ``Transpose`` node of the other, in place. Returns how many copies were dropped."""
    from onnx import helper, numpy_helper  # lazy: onnx takes about a second to import

    by_bytes: dict[tuple, str] = {}
    copies: dict[str, str] = {}  # initializer -> the initializer it is the transpose of
    for init in proto.graph.initializer:
        if len(init.dims) != 2 or init.data_type not in (1, 10, 11, 16) or min(init.dims) < 2:
            continue
        a = numpy_helper.to_array(init)
        key = (a.dtype.str, a.shape, a.tobytes())
        if key in by_bytes:
            copies[init.name] = by_bytes[key]
            continue
        by_bytes[(a.dtype.str, a.T.shape, np.ascontiguousarray(a.T).tobytes())] = init.name
    if not copies:
        return 0
    keep = [i for i in proto.graph.initializer if i.name not in copies]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    nodes = [helper.make_node("Transpose", [src], [name], name=f"{name}_shared", perm=[1, 0])
             for name, src in copies.items()]
    old = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes + old)  # before every use: the graph stays topologically sorted
    return len(copies)


def selected_nodes(proto, layers: list[str], op_types: tuple[str, ...], technique: str,
                   model: nn.Module | None = None) -> list[str]:
    """The ONNX nodes of ``op_types`` the ``layers`` were exported as (matched by weight too when ``model`` is
    given); a layer with none is a one-line error naming it."""
    weights = None
    if model is not None:
        weights = {n: w for n in layers if (w := effective_weight(model.get_submodule(n))) is not None}
    found = layer_nodes(proto, layers, op_types, weights)
    missing = [name for name, nodes in found.items() if not nodes]
    if missing:
        raise CompressionError(f"targets: layer {missing[0]!r} has no {'/'.join(op_types)} node in the ONNX export, "
                               f"so {technique} cannot quantize it in ONNX Runtime; leave it out with ignore")
    return [n for nodes in found.values() for n in nodes]


_ONNX_BITS = {1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 10: 16, 11: 64, 16: 16}
_ONNX_DTYPE = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
               10: "float16", 11: "float64", 16: "bfloat16"}
_QPARAM_SUFFIXES = ("_scale", "_zero_point")  # ORT's quantizer names quantization parameters this way


def onnx_layer_stats(onnx_model: OnnxLike) -> list[LayerStats]:
    """One row per weight tensor stored in the ONNX file (initializers with more than one element), typed by the
    operator that consumes it; ORT's quantization scales and zero points are left out (they are in the size)."""
    from onnx import numpy_helper  # lazy: onnx takes about a second to import

    proto = as_proto(onnx_model)
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


__all__ = ["gemm_to_matmul", "layer_nodes", "onnx_layer_stats", "selected_nodes", "share_transposed"]
