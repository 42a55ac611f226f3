"""Static int8 and QAT in FX graph mode: the model is traced (``fx_tracer``), conv-BN-ReLU / linear-ReLU are fused
wherever they occur (residual blocks, depthwise stacks), residual adds, concatenations, pooling and means stay in
int8, and quantize/dequantize pairs appear only where the graph really changes between float and int8. Prepare
(observers or fake-quant modules, verified against the model on other batch sizes) and convert (int8 kernels, a
functional layer's packed weight as a ``PackedWeight`` module under the layer's own name)."""

from __future__ import annotations

import torch
import torch.ao.quantization as _tq
import torch.nn.functional as F
from torch import fx, nn
from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
from torch.ao.quantization.backend_config import BackendConfig
from torch.ao.quantization.backend_config.x86 import get_x86_backend_config
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx, prepare_qat_fx

from ..inputs import as_logits
from .ao_engine import quiet, use_engine
from .fx_tracer import GraphModeError, first_line, fold_functional_bn, graph_layers, trace
from .safe_state import compact_scalars

# ops left float: FX would quantize them with the global qconfig, at a cost in accuracy (normalisation layers)
# or not at all (embeddings need float-qparams weights; recurrent layers are dynamic-only here)
_FLOAT_TYPES = (nn.LayerNorm, F.layer_norm, nn.GroupNorm, F.group_norm, nn.InstanceNorm1d, nn.InstanceNorm2d,
                nn.InstanceNorm3d, nn.Embedding, nn.EmbeddingBag, nn.LSTM, nn.GRU, nn.RNN, nn.MultiheadAttention,
                nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.PReLU)

def _qconfig_mapping(qc, qat: bool, gm: fx.GraphModule, functional: dict[str, str], skip: set[str]):
    with quiet():
        default = get_default_qat_qconfig_mapping("x86") if qat else get_default_qconfig_mapping("x86")
    mapping = default.set_global(qc)  # keeps x86's fixed-range qconfigs for sigmoid/tanh/softmax
    mapping.set_object_type("reshape", qc)  # as view: the default (reuse the input's observer) leaves a Linear
    # fed by a float reshape unlowered
    for t in _FLOAT_TYPES:
        mapping.set_object_type(t, None)
    for name in skip:
        mapping.set_module_name(name, None)
    for node in gm.graph.nodes:  # a torch.nn block kept as one call (TransformerEncoderLayer, LSTM): float inside
        if node.op == "call_module" and any(True for _ in gm.get_submodule(node.target).children()):
            mapping.set_module_name(node.target, None)
    # ops of the root graph switched off by their position among calls of the same op: functional layers left
    # float, and every op on integer tensors (ids, masks)
    ints = set(gm.meta.get("integer_nodes", ()))
    order: dict[object, int] = {}
    for node in gm.graph.nodes:
        if node.op not in ("call_function", "call_method"):
            continue
        i = order.get(node.target, 0)
        order[node.target] = i + 1
        on_ints = node.name in ints or any(a.name in ints for a in node.all_input_nodes)
        if on_ints or functional.get(node.name) in skip:
            mapping.set_module_name_object_type_order("", node.target, i, None)
    return mapping


def _outputs(model: nn.Module, batches: list[tuple[tuple, dict]]) -> list[torch.Tensor]:
    with torch.no_grad(), quiet():
        return [as_logits(model(*args, **kwargs)) for args, kwargs in batches]


def _compare(expected: list[torch.Tensor], model: nn.Module, batches: list[tuple[tuple, dict]]) -> str | None:
    """None if ``model`` gives the ``expected`` outputs on every batch, else what differs (one line)."""
    try:
        got = _outputs(model, batches)
    except Exception as e:  # noqa: BLE001
        return f"the traced graph fails on another batch size: {first_line(e)}"
    for a, b in zip(expected, got):
        if a.shape != b.shape:
            return f"the traced graph returns shape {tuple(b.shape)}, the model {tuple(a.shape)}"
        tol = 1e-4 * max(1.0, float(a.abs().max()))
        if not torch.allclose(a.float(), b.float(), atol=tol, rtol=1e-4):
            return "the traced graph computes other outputs than the model (data-dependent control flow?)"
    return None


def _backend_config(fuse: bool):
    """x86's backend config; without its fusion patterns when ``fuse`` is False (BN and ReLU then run as their
    own int8 ops)."""
    config = get_x86_backend_config()
    if fuse:
        return config
    keep = [c for c in config.configs if c.fuser_method is None and not isinstance(c.pattern, tuple)]
    return BackendConfig("x86_unfused").set_backend_pattern_configs(keep)


def prepare_graph(model: nn.Module, example: tuple[tuple, dict], checks: list[tuple[tuple, dict]], names: list[str],
                  qc, qat: bool, fuse: bool = True) -> fx.GraphModule:
    """Trace ``model``, fuse, and insert observers (PTQ) or fake-quant modules (QAT) for the layers ``names``
    (others stay float); verified against the model on ``checks`` batches. Raises GraphModeError."""
    use_engine()
    model.eval()
    expected = _outputs(model, checks) if checks else []
    gm, functional = trace(model, *example)  # shares leaf modules with ``model`` (the caller's copy)
    if fuse and not qat:
        fold_functional_bn(gm, functional)
    layers = graph_layers(gm, functional)
    inside = [n for n in names if n not in layers]  # run inside a torch.nn block traced as one op
    names = [n for n in names if n in layers]
    if not names:
        raise GraphModeError(f"layer {inside[0]!r} runs inside a torch.nn block the graph keeps as one float op")
    mapping = _qconfig_mapping(qc, qat, gm, functional, set(layers) - set(names))
    args, kwargs = example
    try:
        with quiet():
            if qat:
                prepared = prepare_qat_fx(gm.train(), mapping, args or tuple(kwargs.values()),
                                          backend_config=_backend_config(fuse))
            else:
                prepared = prepare_fx(gm.eval(), mapping, args or tuple(kwargs.values()),
                                      backend_config=_backend_config(fuse))
    except Exception as e:  # noqa: BLE001
        raise GraphModeError(f"graph-mode preparation failed: {first_line(e)}") from None
    prepared.meta["functional_layers"] = functional
    prepared.meta["left_float"] = inside
    prepared.eval()
    if qat:
        prepared.apply(_tq.disable_fake_quant)
        prepared.apply(_tq.disable_observer)
    problem = _compare(expected, prepared, checks) if checks else None
    if qat:
        prepared.apply(_tq.enable_fake_quant)
        prepared.apply(_tq.enable_observer)
    if problem:
        raise GraphModeError(problem)
    return prepared.train(qat)


class PackedWeight(nn.Module):
    """The int8 weight (and float bias) of a functional convolution or linear call inside a quantized graph,
    packed for the int8 kernels, as a named module so ``measure`` counts it under the layer's own name and the
    state_dict stores plain (quantized) tensors: ``<layer>.weight`` and ``<layer>.bias``."""

    def __init__(self, packed) -> None:
        super().__init__()
        self._packed_params = packed

    def _unpack(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.is_conv():
            return self._packed_params.unpack()
        return torch.ops.quantized.linear_unpack(self._packed_params)

    def is_conv(self) -> bool:
        return hasattr(self._packed_params, "stride")

    def weight(self) -> torch.Tensor:
        return self._unpack()[0]

    def bias(self) -> torch.Tensor | None:
        return self._unpack()[1]

    def _repack(self, w: torch.Tensor, b: torch.Tensor | None):
        p = self._packed_params
        if not self.is_conv():
            return torch.ops.quantized.linear_prepack(w, b)
        prepack = torch.ops.quantized.conv1d_prepack if w.dim() == 3 else torch.ops.quantized.conv2d_prepack
        stride, padding, dilation = list(p.stride()), list(p.padding()), list(p.dilation())
        if w.dim() == 3:
            stride, padding, dilation = stride[-1:], padding[-1:], dilation[-1:]
        return prepack(w, b, stride, padding, dilation, p.groups())

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        w, b = self._unpack()
        destination[prefix + "weight"] = w
        destination[prefix + "bias"] = b

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if prefix + "weight" not in state_dict:
            missing_keys.append(prefix + "weight")
            return
        w, b = state_dict[prefix + "weight"], state_dict.get(prefix + "bias")
        with quiet():
            self._packed_params = self._repack(w, b)

    def __deepcopy__(self, memo):
        new = PackedWeight.__new__(PackedWeight)
        nn.Module.__init__(new)
        w, b = self._unpack()
        new._packed_params = self._repack(w.clone(), None if b is None else b.clone())
        new.training = self.training
        return new

    def extra_repr(self) -> str:
        w = self.weight()
        return f"{'conv' if self.is_conv() else 'linear'} int8 weight {tuple(w.shape)}"


def convert_graph(prepared: fx.GraphModule) -> fx.GraphModule:
    """Lower a calibrated (or QAT-trained) prepared graph to int8 kernels; each functional layer's packed weight
    becomes a ``PackedWeight`` module under the layer's own name."""
    functional = prepared.meta.get("functional_layers", {})
    try:
        with quiet():
            gm = convert_fx(prepared.eval())
    except Exception as e:  # noqa: BLE001
        raise GraphModeError(f"graph-mode conversion failed: {first_line(e)}") from None
    for node in gm.graph.nodes:
        layer = functional.get(node.name)
        if layer is None or node.op != "call_function":
            continue
        packed = next((a for a in node.args if isinstance(a, fx.Node) and a.op == "get_attr"
                       and isinstance(getattr(gm, a.target, None), torch.ScriptObject)), None)
        if packed is None:
            continue
        obj = getattr(gm, packed.target)
        parent_name, _, attr = layer.rpartition(".")
        parent = gm
        for part in parent_name.split(".") if parent_name else ():
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        if attr in parent._modules and list(parent._modules[attr].children()):
            continue  # a module with children of its own: keep torch's attribute name
        parent._modules.pop(attr, None)
        parent.add_module(attr, PackedWeight(obj))
        delattr(gm, packed.target)
        packed.target = f"{layer}._packed_params"
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return compact_scalars(gm)


def is_graph_quantized(model: nn.Module) -> bool:
    """True for a model made by ``convert_graph`` (an FX GraphModule with int8 kernels)."""
    return isinstance(model, fx.GraphModule) and any(
        node.op == "call_function" and node.target in (torch.quantize_per_tensor, torch.quantize_per_channel)
        for node in model.graph.nodes)


__all__ = ["GraphModeError", "PackedWeight", "convert_graph", "is_graph_quantized", "prepare_graph"]
