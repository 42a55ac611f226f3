"""An int8 model of torch.ao (graph or eager) as a float model with explicit quantize/dequantize ops
(``torch.ops.quantized_decomposed``): the same arithmetic, in a form torch.onnx exports as ONNX QDQ (int8 weight
initializers, QuantizeLinear/DequantizeLinear at the observed or learned activation ranges) that ONNX Runtime fuses
into its int8 kernels. Nothing is re-calibrated: the ranges are the ones torch computed."""

from __future__ import annotations

import copy
import operator

import torch
import torch.ao.nn.intrinsic.quantized as _nniq
import torch.ao.nn.quantized as _nnq
import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed
import torch.nn.functional as F
from torch import fx, nn

from ..errors import CompressionError
from ..onnx_io import export_float
from .ao_eager import QuantWrapper
from .graph_mode import PackedWeight, is_graph_quantized

_INT32 = (-(2**31), 2**31 - 1)
# ops that run on int8 tensors and keep their input's scale and zero point exactly
_KEEP_QPARAMS_FN = {F.relu, torch.relu, F.hardtanh, F.relu6, torch.flatten, torch.reshape, torch.transpose,
                    torch.permute, torch.squeeze, torch.unsqueeze, operator.getitem, F.max_pool1d, F.max_pool2d,
                    torch.max_pool1d, torch.max_pool2d, torch.cat, torch.chunk, torch.clamp, F.dropout, torch.narrow,
                    torch.split}
_KEEP_QPARAMS_METHOD = {"relu", "flatten", "reshape", "view", "permute", "transpose", "contiguous", "squeeze",
                        "unsqueeze", "chunk", "split", "clamp", "expand", "repeat", "narrow", "__getitem__"}
_KEEP_QPARAMS_MODULE = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.Flatten, nn.Dropout, nn.Identity, nn.Hardtanh,
                        nn.ReLU6, nn.Unflatten)
# ops whose int8 kernels requantize the result to the input's scale and zero point
_SAME_QPARAMS_FN = {torch.mean, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.avg_pool1d, F.avg_pool2d,
                    torch._C._nn.adaptive_avg_pool2d, torch._C._nn.avg_pool2d, F.interpolate, torch.sum}
_SAME_QPARAMS_METHOD = {"mean", "sum"}
_SAME_QPARAMS_MODULE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.Upsample)
# fixed output ranges of the sigmoid-like ops (torch.ao's FixedQParams)
_FIXED_QPARAMS = {torch.sigmoid: (1 / 256, 0), F.sigmoid: (1 / 256, 0), "sigmoid": (1 / 256, 0),
                  nn.Sigmoid: (1 / 256, 0), torch.tanh: (2 / 256, 128), F.tanh: (2 / 256, 128),
                  "tanh": (2 / 256, 128), nn.Tanh: (2 / 256, 128), F.hardsigmoid: (1 / 256, 0),
                  nn.Hardsigmoid: (1 / 256, 0), "hardsigmoid": (1 / 256, 0)}


class QDQExportError(Exception):
    """An int8 model has a part with no QDQ equivalent here (one line: which)."""


def _qd():
    return torch.ops.quantized_decomposed


def _range(dtype: torch.dtype) -> tuple[int, int, torch.dtype]:
    """(qmin, qmax, plain int dtype) of a quantized activation dtype."""
    if dtype in (torch.quint8, torch.uint8):
        return 0, 255, torch.uint8
    if dtype in (torch.qint8, torch.int8):
        return -128, 127, torch.int8
    raise QDQExportError(f"activations of dtype {dtype} have no ONNX QDQ form")


class _Emitter:
    """Builds the float graph: constants as buffers of a fresh root module, QDQ pairs as decomposed ops."""

    def __init__(self, graph: fx.Graph, root: nn.Module):
        self.graph, self.root, self.n = graph, root, 0

    def const(self, value: torch.Tensor, hint: str) -> fx.Node:
        name = f"_qdq_{hint}_{self.n}"
        self.n += 1
        self.root.register_buffer(name, value.detach().clone())
        return self.graph.get_attr(name)

    def qdq(self, x: fx.Node, scale: float, zero_point: int, dtype: torch.dtype) -> fx.Node:
        qd = _qd()
        lo, hi, plain = _range(dtype)
        q = self.graph.call_function(qd.quantize_per_tensor.default, (x, float(scale), int(zero_point), lo, hi, plain))
        return self.graph.call_function(qd.dequantize_per_tensor.default, (q, float(scale), int(zero_point), lo, hi, plain))

    def weight(self, w: torch.Tensor, hint: str) -> fx.Node:
        """A quantized weight as its int8 codes and a DequantizeLinear."""
        qd = _qd()
        codes = self.const(w.int_repr(), hint + "_w")
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric, torch.per_channel_affine_float_qparams):
            scales = self.const(w.q_per_channel_scales().float(), hint + "_ws")
            zps = self.const(w.q_per_channel_zero_points().to(torch.int64), hint + "_wz")
            return self.graph.call_function(qd.dequantize_per_channel.default,
                                            (codes, scales, zps, int(w.q_per_channel_axis()), -128, 127, torch.int8))
        return self.graph.call_function(qd.dequantize_per_tensor.default,
                                        (codes, float(w.q_scale()), int(w.q_zero_point()), -128, 127, torch.int8))

    def bias(self, b: torch.Tensor | None, w: torch.Tensor, in_scale: float, hint: str) -> fx.Node | None:
        """The float bias as int32 codes at scale in_scale x weight scale (what int8 kernels add; ONNX Runtime
        fuses a QDQ convolution only with such a bias)."""
        if b is None:
            return None
        qd = _qd()
        b = b.detach().float()
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            scale = (w.q_per_channel_scales().float() * in_scale).clamp(min=1e-12)
        else:
            scale = torch.full_like(b, float(w.q_scale()) * in_scale).clamp(min=1e-12)
        codes = torch.clamp(torch.round(b / scale), *_INT32).to(torch.int32)
        return self.graph.call_function(qd.dequantize_per_channel.default, (
            self.const(codes, hint + "_b"), self.const(scale, hint + "_bs"),
            self.const(torch.zeros(b.shape, dtype=torch.int64), hint + "_bz"), 0, *_INT32, torch.int32))


def _weighted(em: _Emitter, x: fx.Node, in_qp, w: torch.Tensor, b, kind: str, conv_args: tuple, relu: bool,
              out_scale: float, out_zp: int, out_dtype, hint: str) -> fx.Node:
    wf = em.weight(w, hint)
    bf = em.bias(b, w, in_qp[0], hint)
    if kind == "linear":
        y = em.graph.call_function(F.linear, (x, wf, bf))
    else:
        fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[w.dim() - 2]
        y = em.graph.call_function(fn, (x, wf, bf, *conv_args))
    if relu:
        y = em.graph.call_function(F.relu, (y,))
    return em.qdq(y, out_scale, out_zp, out_dtype)


def _conv_args(mod) -> tuple:
    if getattr(mod, "padding_mode", "zeros") != "zeros":
        raise QDQExportError(f"a convolution with padding_mode={mod.padding_mode!r} has no QDQ form here")
    return (tuple(mod.stride), tuple(mod.padding), tuple(mod.dilation), mod.groups)


def _packed_conv_args(packed) -> tuple:
    return (tuple(packed.stride()), tuple(packed.padding()), tuple(packed.dilation()), packed.groups())


_QUANT_FN = {  # torch.ops.quantized.<op>(x, [y,] ..., scale, zero_point) -> float op (+ relu)
    "add": (torch.add, False), "add_relu": (torch.add, True), "mul": (torch.mul, False),
    "mul_relu": (torch.mul, True),
}


def qdq_module(model: nn.Module) -> nn.Module:
    """The float equivalent of an int8 ``torch.ao`` model with explicit QDQ ops (graph mode or the eager
    per-layer wrappers); raises QDQExportError naming what has no QDQ form."""
    if isinstance(model, fx.GraphModule) and is_graph_quantized(model):
        return _qdq_graph(model)
    return _qdq_eager(model)


def export_qdq(model: nn.Module, example, opset: int | None = None):
    """The ONNX ModelProto of a static int8 / QAT model of torch.ao (graph or eager mode) as QDQ with torch's own
    ranges (int8 weights, int32 biases, the calibrated or learned activation scales), which ONNX Runtime fuses into
    int8 kernels; one line naming what has no QDQ form otherwise."""
    try:
        ref = qdq_module(model)
    except QDQExportError as e:
        raise CompressionError(f"export: the int8 model has no ONNX QDQ form: {e}; export the float model "
                               "and quantize it in ONNX Runtime (engine='onnxruntime')") from None
    return export_float(ref, example, opset)


def _qdq_graph(gm: fx.GraphModule) -> fx.GraphModule:  # noqa: C901 - one case per int8 op family
    root = nn.Module()
    graph = fx.Graph()
    em = _Emitter(graph, root)
    env: dict[fx.Node, object] = {}
    qp: dict[fx.Node, tuple[float, int, torch.dtype]] = {}  # node of ``gm`` with an int8 output -> its qparams
    modules = dict(gm.named_modules())

    def arg(a):
        return fx.node.map_arg(a, lambda n: env[n])

    def attr(node):
        v = gm
        for part in node.target.split("."):
            v = getattr(v, part)
        return v

    def scalar(a):
        v = attr(a) if isinstance(a, fx.Node) and a.op == "get_attr" else a
        return v.item() if isinstance(v, torch.Tensor) else v

    for node in gm.graph.nodes:
        hint = node.name
        if node.op == "placeholder":
            env[node] = graph.node_copy(node)
            continue
        if node.op == "output":
            graph.output(arg(node.args[0]))
            continue
        if node.op == "get_attr":
            v = attr(node)
            if isinstance(v, torch.Tensor) and not v.is_quantized:
                env[node] = em.const(v, "attr")
            else:
                env[node] = None  # scales, zero points, packed weights: read at their users
            continue
        args, kwargs = node.args, node.kwargs
        if node.op == "call_function" and node.target in (torch.quantize_per_tensor,):
            x, s, z, dtype = args
            env[node], qp[node] = em.qdq(env[x], scalar(s), scalar(z), dtype), (scalar(s), scalar(z), dtype)
            continue
        if (node.op == "call_method" and node.target == "dequantize") or \
                (node.op == "call_function" and node.target is torch.dequantize):
            env[node] = env[args[0]]
            continue
        if node.op == "call_module":
            mod = modules[node.target]
            x = env[args[0]]
            in_qp = qp.get(args[0])
            kind = None
            if isinstance(mod, (_nniq.LinearReLU, _nnq.Linear)) and type(mod).__module__.startswith("torch.ao.nn"):
                kind, relu = "linear", isinstance(mod, _nniq.LinearReLU)
            elif isinstance(mod, (_nnq.Conv1d, _nnq.Conv2d, _nnq.Conv3d)):
                kind, relu = "conv", isinstance(mod, (_nniq.ConvReLU1d, _nniq.ConvReLU2d, _nniq.ConvReLU3d))
            if kind is not None:
                if in_qp is None:
                    raise QDQExportError(f"layer {node.target!r} receives a float input")
                out = _weighted(em, x, in_qp, mod.weight(), mod.bias(), kind,
                                _conv_args(mod) if kind == "conv" else (), relu, mod.scale, mod.zero_point,
                                in_qp[2], hint)
                env[node], qp[node] = out, (float(mod.scale), int(mod.zero_point), in_qp[2])
                continue
            if isinstance(mod, (_nnq.BatchNorm2d, _nnq.BatchNorm3d)):
                relu = isinstance(mod, (_nniq.BNReLU2d, _nniq.BNReLU3d))
                y = graph.call_function(F.batch_norm, (x, em.const(mod.running_mean, "bn"),
                                                        em.const(mod.running_var, "bn"), em.const(mod.weight, "bn"),
                                                        em.const(mod.bias, "bn"), False, 0.0, mod.eps))
                if relu:
                    y = graph.call_function(F.relu, (y,))
                out = em.qdq(y, mod.scale, mod.zero_point, in_qp[2] if in_qp else torch.quint8)
                env[node], qp[node] = out, (float(mod.scale), int(mod.zero_point), in_qp[2] if in_qp else torch.quint8)
                continue
            if isinstance(mod, _nnq.LayerNorm):
                y = graph.call_function(F.layer_norm, (x, tuple(mod.normalized_shape), em.const(mod.weight, "ln"),
                                                        em.const(mod.bias, "ln"), mod.eps))
                out = em.qdq(y, mod.scale, mod.zero_point, in_qp[2] if in_qp else torch.quint8)
                env[node], qp[node] = out, (float(mod.scale), int(mod.zero_point), in_qp[2] if in_qp else torch.quint8)
                continue
            float_of = {_nnq.ReLU6: nn.ReLU6(), _nnq.Hardswish: nn.Hardswish(), _nnq.ELU: None,
                        _nnq.LeakyReLU: None, _nnq.Sigmoid: nn.Sigmoid(), _nnq.Softmax: None, _nnq.Dropout: nn.Identity()}
            if type(mod) in float_of:
                fm = float_of[type(mod)]
                if fm is None:
                    if isinstance(mod, _nnq.ELU):
                        fm = nn.ELU(mod.alpha)
                    elif isinstance(mod, _nnq.LeakyReLU):
                        fm = nn.LeakyReLU(mod.negative_slope)
                    else:
                        fm = nn.Softmax(mod.dim)
                name = f"_qdq_mod_{em.n}"
                em.n += 1
                root.add_module(name, fm)
                y = graph.call_module(name, (x,))
                s = getattr(mod, "scale", getattr(mod, "output_scale", None))  # Sigmoid: output_scale (fixed)
                z = getattr(mod, "zero_point", getattr(mod, "output_zero_point", None))
                if s is None and in_qp is not None:  # ReLU6 / Dropout keep the input's qparams
                    s, z = in_qp[0], in_qp[1]
                if s is not None:
                    out = em.qdq(y, float(s), int(z), in_qp[2] if in_qp else torch.quint8)
                    env[node], qp[node] = out, (float(s), int(z), in_qp[2] if in_qp else torch.quint8)
                else:
                    env[node] = y
                continue
            if type(mod).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")):
                raise QDQExportError(f"layer {node.target!r} ({type(mod).__name__}) has no QDQ form here")
            if isinstance(mod, PackedWeight):
                raise QDQExportError(f"layer {node.target!r} is called directly")
            name = node.target
            if name not in dict(root.named_modules()):
                parent = root
                parts = name.split(".")
                for part in parts[:-1]:
                    if not hasattr(parent, part):
                        parent.add_module(part, nn.Module())
                    parent = getattr(parent, part)
                parent.add_module(parts[-1], mod)
            y = graph.call_module(name, arg(args), arg(kwargs))
            _follow(em, node, mod, y, in_qp, env, qp)
            continue
        if node.op == "call_function" and _quantized_op_name(node.target):
            _quantized_op(em, node, _quantized_op_name(node.target), env, qp, attr, scalar, hint)
            continue
        # any other op: float as it is; int8 inputs keep, requantize to, or take fixed qparams
        y = getattr(graph, {"call_function": "call_function", "call_method": "call_method"}[node.op])(
            node.target, arg(args), arg(kwargs))
        in_qp = next((qp[a] for a in node.all_input_nodes if a in qp), None)
        _follow(em, node, node.target, y, in_qp, env, qp)
    out = fx.GraphModule(root, graph, "QDQ" + type(gm).__name__)
    out.graph.eliminate_dead_code()
    out.recompile()
    return out.eval()


def _quantized_op_name(target) -> str | None:
    """"add" for torch.ops.quantized.add (packet or overload), else None."""
    if isinstance(target, torch._ops.OpOverload):
        name = target._schema.name
    elif isinstance(target, torch._ops.OpOverloadPacket):
        name = target._qualified_op_name
    else:
        return None
    return name.split("::", 1)[1] if name.startswith("quantized::") else None


def _follow(em: _Emitter, node: fx.Node, target, y: fx.Node, in_qp, env, qp) -> None:
    """Record the float op ``y`` standing for ``node``; with int8 inputs, give it the qparams torch's int8 op has."""
    env[node] = y
    if in_qp is None:
        return
    key = type(target) if isinstance(target, nn.Module) else target
    fixed = _FIXED_QPARAMS.get(key)
    if fixed is not None:
        env[node], qp[node] = em.qdq(y, fixed[0], fixed[1], torch.quint8), (fixed[0], fixed[1], torch.quint8)
        return
    if isinstance(target, nn.Module):
        keep, same = isinstance(target, _KEEP_QPARAMS_MODULE), isinstance(target, _SAME_QPARAMS_MODULE)
    elif isinstance(target, str):
        keep, same = target in _KEEP_QPARAMS_METHOD, target in _SAME_QPARAMS_METHOD
    else:
        keep, same = target in _KEEP_QPARAMS_FN, target in _SAME_QPARAMS_FN
    if keep and target in (torch.chunk, torch.split, "chunk", "split"):
        qp[node] = in_qp  # a tuple: its items get their QDQ at the getitem
    elif keep:  # the same qparams, and a QDQ pair so the next int8 op sees a DequantizeLinear input
        env[node], qp[node] = em.qdq(y, *in_qp), in_qp
    elif same:
        env[node], qp[node] = em.qdq(y, *in_qp), in_qp
    elif target in (getattr, "size", "dim") or target is getattr:
        return  # shapes: not tensors
    else:
        name = getattr(target, "__name__", None) or type(target).__name__
        raise QDQExportError(f"{node.name}: {name} on int8 tensors has no QDQ form here")


def _quantized_op(em: _Emitter, node: fx.Node, name: str, env, qp, attr, scalar, hint) -> None:
    """torch.ops.quantized.<name> calls of a lowered graph as float ops with QDQ."""
    args = node.args
    g = em.graph
    if name in _QUANT_FN:
        fn, relu = _QUANT_FN[name]
        a, b, s, z = args[0], args[1], args[2], args[3]
        xa = env[a] if isinstance(a, fx.Node) else a
        xb = env[b] if isinstance(b, fx.Node) else b
        dtype = (qp.get(a) or qp.get(b) or (0, 0, torch.quint8))[2]
        y = g.call_function(fn, (xa, xb))
        if relu:
            y = g.call_function(F.relu, (y,))
        out = em.qdq(y, scalar(s), scalar(z), dtype)
        env[node], qp[node] = out, (scalar(s), scalar(z), dtype)
        return
    if name == "cat":
        tensors, dim, s, z = args[0], args[1], args[2], args[3]
        xs = [env[t] for t in tensors]
        dtype = next((qp[t][2] for t in tensors if t in qp), torch.quint8)
        y = g.call_function(torch.cat, (xs, dim))
        out = em.qdq(y, scalar(s), scalar(z), dtype)
        env[node], qp[node] = out, (scalar(s), scalar(z), dtype)
        return
    if name in ("conv1d", "conv2d", "conv1d_relu", "conv2d_relu", "linear", "linear_relu"):
        x, packed_node, s, z = args[0], args[1], args[2], args[3]
        packed = attr(packed_node)
        xin = env[x]
        in_qp = qp.get(x)
        if in_qp is None:
            raise QDQExportError(f"{node.name}: a functional int8 layer receives a float input")
        if name.startswith("linear"):
            w, b = torch.ops.quantized.linear_unpack(packed)
            conv_args: tuple = ()
        else:
            w, b = packed.unpack()
            conv_args = _packed_conv_args(packed)
            if w.dim() == 3:
                conv_args = tuple(a[-1:] if isinstance(a, tuple) else a for a in conv_args)
        out = _weighted(em, xin, in_qp, w, b, "linear" if name.startswith("linear") else "conv", conv_args,
                        name.endswith("_relu"), scalar(s), scalar(z), in_qp[2], hint)
        env[node], qp[node] = out, (scalar(s), scalar(z), in_qp[2])
        return
    raise QDQExportError(f"{node.name}: quantized::{name} has no QDQ form here")


class _QDQWrapped(nn.Module):
    """An eager QuantWrapper(int8 layer) as float: QDQ(input) -> layer with dequantized int8 weight and int32 bias
    -> QDQ(output)."""

    def __init__(self, wrapper: nn.Module):
        super().__init__()
        quant, mod = wrapper.quant, wrapper.module
        self.in_scale, self.in_zp, self.dtype = float(quant.scale), int(quant.zero_point), quant.dtype
        self.out_scale, self.out_zp = float(mod.scale), int(mod.zero_point)
        w, b = mod.weight(), mod.bias()
        self.kind = "linear" if isinstance(mod, _nnq.Linear) else "conv"
        self.relu = isinstance(mod, (_nniq.LinearReLU, _nniq.ConvReLU1d, _nniq.ConvReLU2d, _nniq.ConvReLU3d))
        self.conv_args = _conv_args(mod) if self.kind == "conv" else ()
        graph = fx.Graph()
        em = _Emitter(graph, self)
        x = graph.placeholder("x")
        xq = em.qdq(x, self.in_scale, self.in_zp, self.dtype)
        y = _weighted(em, xq, (self.in_scale, self.in_zp, self.dtype), w, b, self.kind, self.conv_args, self.relu,
                      self.out_scale, self.out_zp, self.dtype, "layer")
        graph.output(y)
        self._fn = fx.GraphModule(self, graph)

    def forward(self, x):
        return self._fn(x)


def _qdq_eager(model: nn.Module) -> nn.Module:
    out = copy.deepcopy(model)
    for name, m in list(out.named_modules()):
        if isinstance(m, QuantWrapper) and isinstance(getattr(m, "module", None), (_nnq.Linear, _nnq.Conv1d,
                                                                                    _nnq.Conv2d, _nnq.Conv3d)):
            parent_name, _, attr = name.rpartition(".")
            parent = out.get_submodule(parent_name) if parent_name else out
            setattr(parent, attr, _QDQWrapped(m))
    left = [(n, type(m).__name__) for n, m in out.named_modules()
            if type(m).__module__.startswith(("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized"))
            and not isinstance(m, nn.Sequential)]
    if left:
        raise QDQExportError(f"layer {left[0][0]!r} ({left[0][1]}) has no QDQ form here")
    return out.eval()


__all__ = ["QDQExportError", "export_qdq", "qdq_module"]
