"""Packed weight-only layers (int3/int4/int8 codes with group scales, as RTN, GPTQ or AWQ chose them) as ONNX
Runtime ``MatMulNBits`` nodes carrying the *same* codes and scales: no second rounding, so the file runs exactly
the weights the torch model computes with (up to the kernel's int8 activations at ``accuracy_level`` 4).

``MatMulNBits`` (com.microsoft) stores B as uint8 (N, blocks, block_size * bits / 8), unsigned codes with a default
zero point of 2^(bits-1), and one float scale per (row, block). Signed codes q map to q + 2^(bits-1); 3-bit codes
ride in 4-bit nibbles (ONNX Runtime has no 3-bit kernel: an int3 layer ships as large as an int4 one there);
per-channel layers repeat their scale over blocks of 128. An AWQ layer's per-input scale becomes a ``Mul`` on the
activation before the node. Duck-typed on the layer (``codes()``, ``scale``, ``zero_point``, ``group_size``,
``bits``, optional ``input_scale``): nothing here imports the quantize package.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import CompressionError
from .onnx_io import export_float, strip_metadata
from .ort_nodes import gemm_to_matmul, layer_nodes
from .technique import clone_model

PER_CHANNEL_BLOCK = 128


def is_packed(module: nn.Module) -> bool:
    """A packed weight-only Linear (``Int4Linear``, ``Int8WeightLinear``, ``Int3Linear`` and their AWQ forms)."""
    return callable(getattr(module, "codes", None)) and hasattr(module, "qweight") and hasattr(module, "n_groups")


def _pow2_at_least(n: int) -> int:
    b = 16
    while b < n:
        b *= 2
    return b


def nbits_arrays(m: nn.Module) -> dict:
    """The ``MatMulNBits`` inputs and attributes of packed layer ``m``: exactly its codes and scales."""
    n_out, k = m.out_features, m.in_features
    bits = 8 if m.bits > 4 else 4  # int3 codes ride in 4-bit nibbles
    mid = 2 ** (bits - 1)
    codes = m.codes()[:, :k].to(torch.int16)  # (N, K) signed
    scale = m.scale.float()  # (N, G)
    zp = m.zero_point.to(torch.int16) if m.zero_point is not None else None  # (N, G)
    if m.n_groups == 1 and (m.group_size > 256 or m.group_size & (m.group_size - 1)):  # per channel, any width
        block = min(PER_CHANNEL_BLOCK, _pow2_at_least(k))
        blocks = -(-k // block)
        scale = scale.expand(n_out, blocks)
        zp = zp.expand(n_out, blocks) if zp is not None else None
    else:
        block, blocks = _pow2_at_least(m.group_size), m.n_groups
        if block != m.group_size:
            raise CompressionError(f"export: group size {m.group_size} is not a power of two of at least 16, which "
                                   "ONNX Runtime's MatMulNBits needs; use group_size 16-256")
    u = torch.nn.functional.pad(codes + mid, (0, blocks * block - k), value=mid)  # (N, blocks * block) unsigned
    if bits == 4:
        u = u[:, 0::2] | (u[:, 1::2] << 4)  # two per byte, low nibble first
    b = u.to(torch.uint8).reshape(n_out, blocks, -1).numpy()  # (N, blocks, blob)
    out = {"B": b, "scales": scale.contiguous().reshape(-1).numpy().astype(np.float32), "K": k, "N": n_out,
           "bits": bits, "block_size": block, "zero_points": None, "input_scale": None}
    if zp is not None:
        z = (zp + mid).to(torch.int16)  # (N, blocks)
        if bits == 4:
            z = torch.nn.functional.pad(z, (0, blocks % 2), value=mid)
            z = z[:, 0::2] | (z[:, 1::2] << 4)
        out["zero_points"] = z.to(torch.uint8).reshape(-1).numpy()
    s = getattr(m, "input_scale", None)
    if isinstance(s, torch.Tensor):
        out["input_scale"] = (1.0 / s.float()).numpy().astype(np.float32)  # (K,) multiplies the activation
    return out


def float_linear(m: nn.Module) -> nn.Linear:
    """A float nn.Linear with a packed weight-only layer's dequantized weight."""
    lin = nn.Linear(m.in_features, m.out_features, bias=m.bias is not None)
    with torch.no_grad():
        lin.weight.copy_(m.dequantized_weight())
        if m.bias is not None:
            lin.bias.copy_(m.bias.detach().float())
    return lin.eval()


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def replace_with_nbits(proto, layers: dict[str, nn.Module], accuracy_level: int = 4) -> int:
    """In ``proto`` (exported with metadata, Gemm rewritten as MatMul), replace the MatMul node of each packed
    layer (name -> module) by ``MatMulNBits`` with the layer's own codes; returns how many nodes were replaced."""
    from onnx import helper, numpy_helper  # lazy: onnx takes about a second to import

    weights = {n: m.dequantized_weight().detach() for n, m in layers.items()}
    found = layer_nodes(proto, list(layers), ("MatMul",), weights)
    missing = [n for n, nodes in found.items() if not nodes]
    if missing:
        raise CompressionError(f"targets: layer {missing[0]!r} has no MatMul node in the ONNX export, so its packed "
                               "weights cannot become MatMulNBits; leave it out with ignore")
    by_node = {node: name for name, nodes in found.items() for node in nodes}
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    done = 0
    for node in nodes:
        name = by_node.get(node.name)
        if name is None:
            proto.graph.node.append(node)
            continue
        a = nbits_arrays(layers[name])
        tag = node.input[1]
        inputs = [node.input[0], tag + "_nbits", tag + "_nbits_scales"]
        inits = [numpy_helper.from_array(a["B"], inputs[1]), numpy_helper.from_array(a["scales"], inputs[2])]
        if a["zero_points"] is not None:
            inputs.append(tag + "_nbits_zero_points")
            inits.append(numpy_helper.from_array(a["zero_points"], inputs[3]))
        if a["input_scale"] is not None:  # AWQ: x / s before the node
            scaled = node.output[0] + "_awq_in"
            inits.append(numpy_helper.from_array(a["input_scale"], tag + "_awq_inv_scale"))
            mul = helper.make_node("Mul", [node.input[0], tag + "_awq_inv_scale"], [scaled], name=node.name + "_awq")
            mul.metadata_props.extend(node.metadata_props)
            proto.graph.node.append(mul)
            inputs[0] = scaled
        proto.graph.initializer.extend(inits)
        q = helper.make_node("MatMulNBits", inputs, [node.output[0]], name=node.name + "_nbits", domain="com.microsoft",
                             K=a["K"], N=a["N"], bits=a["bits"], block_size=a["block_size"],
                             accuracy_level=accuracy_level)
        q.metadata_props.extend(node.metadata_props)
        proto.graph.node.append(q)
        done += 1
    used = {i for n in proto.graph.node for i in n.input}
    keep = [i for i in proto.graph.initializer if i.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(keep)
    if not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return done


def nbits_proto(model: nn.Module, example, accuracy_level: int = 4):
    """The ONNX ModelProto of ``model`` with every packed weight-only layer as ``MatMulNBits`` holding its own
    codes and scales (the rest exported as float)."""
    packed = {n: m for n, m in model.named_modules() if is_packed(m)}
    float_model = clone_model(model)
    for name, m in packed.items():
        _set(float_model, name, float_linear(m))
    proto = export_float(float_model, example, keep_metadata=True)
    gemm_to_matmul(proto)
    if packed:
        replace_with_nbits(proto, packed, accuracy_level)
    strip_metadata(proto)
    return proto


__all__ = ["PER_CHANNEL_BLOCK", "is_packed", "nbits_arrays", "nbits_proto", "replace_with_nbits"]
