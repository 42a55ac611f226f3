"""The one adapter over ``torch.ao.quantization`` (eager mode: dynamic, static PTQ, QAT).

torch.ao.quantization works on torch 2.13 but is deprecated in favour of torchao, whose CPU int8 paths are slower
here (FACTS.md). Every call to it lives in this module, so a migration touches one file. The quantized engine is
picked per platform: ``x86`` (fbgemm + onednn kernels) on x86 machines, ``qnnpack`` on ARM (Apple laptops fail
with "NoQEngine" otherwise; qnnpack is slower than fp32 on x86).
"""

from __future__ import annotations

import contextlib
import platform
import warnings
from collections import OrderedDict
from typing import Iterator

import torch
from torch import nn

import torch.ao.nn.quantized.dynamic as _nnqd
import torch.ao.quantization as _tq

QuantStub = _tq.QuantStub
DeQuantStub = _tq.DeQuantStub
QuantWrapper = _tq.QuantWrapper


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch.ao's deprecation notices and its uncalibrated-observer warning (replay builds structure only)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", message=r".*must run observer before calling calculate_qparams.*")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated.*")
        yield


def pick_engine() -> str:
    """The fast quantized engine for this platform: x86 on x86-64, qnnpack on ARM, else the first supported."""
    supported = torch.backends.quantized.supported_engines
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64") or machine.startswith("arm"):
        wanted = ["qnnpack"]
    else:
        wanted = ["x86", "fbgemm", "onednn"]
    for name in wanted + [e for e in supported if e != "none"]:
        if name in supported:
            return name
    raise RuntimeError(f"no quantized engine available (supported: {supported})")


def use_engine() -> str:
    """Select the platform's engine for packing and running int8 modules; returns its name."""
    name = pick_engine()
    if torch.backends.quantized.engine != name:
        torch.backends.quantized.engine = name
    return name


def _reduce_range(engine: str) -> bool:
    """fbgemm-style kernels (x86, fbgemm) need 7-bit activations to avoid int16 overflow without VNNI."""
    return engine in ("x86", "fbgemm")


# ------------------------------------------------------------------------------------------------- dynamic
def quantize_dynamic(model: nn.Module, names: list[str]) -> nn.Module:
    """Dynamic int8 (weights int8, activations quantized per batch at run time) of the named Linear/LSTM layers,
    in place on ``model`` (the caller passes a copy)."""
    use_engine()
    spec = {name: _tq.default_dynamic_qconfig for name in names}
    with _quiet():
        return _tq.quantize_dynamic(model, qconfig_spec=spec, dtype=torch.qint8, inplace=True)


def torch_quantize_dynamic(model: nn.Module, types: set[type[nn.Module]]) -> nn.Module:
    """torch's own ``quantize_dynamic`` by module types on a copy: the oracle the tests compare against."""
    use_engine()
    with _quiet():
        return _tq.quantize_dynamic(model, types, dtype=torch.qint8, inplace=False)


# ------------------------------------------------------------------------------------------- static / QAT
def qconfig(observer: str, weights: str, weight_bits: int, qat: bool = False) -> "_tq.QConfig":
    """Activations: quint8 per tensor (min-max or histogram observer; moving-average min-max under QAT).
    Weights: signed symmetric ``weight_bits`` (per tensor or per output channel) stored as qint8."""
    engine = use_engine()
    reduce = _reduce_range(engine)
    qmax = 2 ** (weight_bits - 1) - 1
    # below 8 bits the grid is symmetric [-qmax, qmax] (scale = max|w| / qmax): graph-mode lowering quantizes
    # weights without clamping to the observer's range, and [-2^(b-1), qmax] would round max|w| to 2^(b-1)
    qmin = -(qmax + 1) if weight_bits == 8 else -qmax
    per_channel = weights == "per_channel"
    if qat:
        act = _tq.FakeQuantize.with_args(observer=_tq.MovingAverageMinMaxObserver, quant_min=0,
                                         quant_max=127 if reduce else 255, dtype=torch.quint8,
                                         qscheme=torch.per_tensor_affine)
        wobs = _tq.MovingAveragePerChannelMinMaxObserver if per_channel else _tq.MovingAverageMinMaxObserver
        weight = _tq.FakeQuantize.with_args(
            observer=wobs, quant_min=qmin, quant_max=qmax, dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric if per_channel else torch.per_tensor_symmetric)
        return _tq.QConfig(activation=act, weight=weight)
    obs = _tq.HistogramObserver if observer == "histogram" else _tq.MinMaxObserver
    act = obs.with_args(dtype=torch.quint8, quant_min=0, quant_max=127 if reduce else 255)
    if per_channel:
        weight = _tq.PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric,
                                                        quant_min=qmin, quant_max=qmax)
    else:
        weight = _tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                              quant_min=qmin, quant_max=qmax)
    return _tq.QConfig(activation=act, weight=weight)


def fuse(model: nn.Module, groups: list[list[str]], qat: bool) -> nn.Module:
    """Fuse conv-BN(-ReLU) / linear-ReLU groups in place (BN folded; QAT keeps BN for training)."""
    if not groups:
        return model
    with _quiet():
        if qat:
            return _tq.fuse_modules_qat(model, groups, inplace=True)
        return _tq.fuse_modules(model, groups, inplace=True)


def prepare(model: nn.Module, qat: bool) -> nn.Module:
    """Insert observers (PTQ, eval mode) or fake-quant modules (QAT, train mode) where ``qconfig`` is set."""
    with _quiet():
        if qat:
            return _tq.prepare_qat(model.train(), inplace=True)
        return _tq.prepare(model.eval(), inplace=True)


def convert(model: nn.Module) -> nn.Module:
    """Swap observed modules for real int8 modules using the observed ranges (in place, eval mode)."""
    with _quiet():
        return _tq.convert(model.eval(), inplace=True)


def run_quiet(fn, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` with torch.ao's deprecation warnings silenced (forward passes through observers)."""
    with _quiet():
        return fn(*args, **kwargs)


# --------------------------------------------------------------------------------------- safe serialisation
def _dynamic_rnns(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _nnqd.modules.rnn.RNNBase)]


def is_dynamic_rnn(module: nn.Module) -> bool:
    return isinstance(module, _nnqd.modules.rnn.RNNBase)


def rnn_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """The int8 weights and float biases packed inside a dynamically quantized LSTM/GRU, by torch's names."""
    with _quiet():
        wb = module._weight_bias()
    return {**wb["weight"], **wb["bias"]}


def safe_state_dict(model: nn.Module, state: dict | None = None) -> dict:
    """``model.state_dict()`` (or the given ``state`` of ``model``) with the packed TorchScript objects of dynamic LSTMs replaced by their tensors.

    Dynamic quantized LSTM/GRU state holds ``torch.ScriptObject`` packed params, which ``torch.load(...,
    weights_only=True)`` refuses; its int8 weights and biases are saved as plain (quantized) tensors instead under
    ``<lstm>._weight_bias.<name>`` and repacked by ``load_safe_state_dict``. Other modules' state is unchanged
    (quantized Linear/Conv state is tensors and tuples, which load with weights_only=True).
    """
    state = model.state_dict() if state is None else state
    for name, rnn in _dynamic_rnns(model):
        prefix = f"{name}." if name else ""
        for key in [k for k in state if k.startswith(prefix + "_all_weight_values.")]:
            del state[key]
        for wname, t in rnn_weights(rnn).items():
            state[f"{prefix}_weight_bias.{wname}"] = t
    return state


def load_safe_state_dict(model: nn.Module, state: dict) -> nn.Module:
    """Load a ``safe_state_dict`` into a model of the same structure (strict), repacking dynamic LSTM weights."""
    meta = getattr(state, "_metadata", None)  # module versions: quantized modules' loaders depend on them
    state = OrderedDict(state)
    if meta is not None:
        state._metadata = meta  # type: ignore[attr-defined]
    for name, rnn in _dynamic_rnns(model):
        prefix = f"{name}." if name else ""
        tag = prefix + "_weight_bias."
        mine = {k[len(tag):]: state.pop(k) for k in [k for k in state if k.startswith(tag)]}
        if mine:
            with _quiet():
                rnn.set_weight_bias(mine)
        current = rnn.state_dict()
        for k, v in current.items():
            if k.startswith("_all_weight_values."):
                state[prefix + k] = v
    model.load_state_dict(state)
    return model


# ---------------------------------------------------------------------------------------------- graph mode
# Static int8 and QAT run in FX graph mode: the model is traced, conv-BN-ReLU / linear-ReLU are fused wherever
# they occur (residual blocks, depthwise stacks), residual adds, concatenations, pooling and means stay in int8,
# and quantize/dequantize pairs appear only where the graph really changes between float and int8.
import math  # noqa: E402
import operator  # noqa: E402

import torch.nn.functional as F  # noqa: E402
from torch import fx  # noqa: E402

# ops left float: FX would quantize them with the global qconfig, at a cost in accuracy (normalisation layers)
# or not at all (embeddings need float-qparams weights; recurrent layers are dynamic-only here)
_FLOAT_TYPES = (nn.LayerNorm, F.layer_norm, nn.GroupNorm, F.group_norm, nn.InstanceNorm1d, nn.InstanceNorm2d,
                nn.InstanceNorm3d, nn.Embedding, nn.EmbeddingBag, nn.LSTM, nn.GRU, nn.RNN, nn.MultiheadAttention,
                nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.PReLU)
_FUNCTIONAL_WEIGHTED = {torch.conv1d: 1, torch.conv2d: 2, F.conv1d: 1, F.conv2d: 2, F.linear: 0, torch._C._nn.linear: 0}


class GraphModeError(Exception):
    """The model could not be traced and quantized in graph mode (the message is one line: why)."""


def _first_line(e: BaseException) -> str:
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


class _ConcreteTracer(fx.Tracer):
    """torch.fx tracing that also runs every traced op on a real example, so Python control flow on shapes
    (a "same" padding computed in ``forward``, ``max(pad, 0)``) takes the branch the example takes instead of
    failing. Leaf modules are torch's own (``torch.nn`` classes); user subclasses are traced through, so a
    Conv2d subclass with its own ``forward`` keeps it. Graphs specialised this way are verified on other batch
    sizes before use (``prepare_graph``)."""

    def __init__(self, example: dict[str, object]):
        super().__init__()
        self.example = example  # placeholder name -> example value
        self.values: dict[fx.Node, object] = {}
        self._evaluating = False
        self._attrs: dict[str, object] = {}

    def trace(self, root, concrete_args=None):  # type: ignore[override]
        self._attrs = {**dict(root.named_parameters(remove_duplicate=False)), **dict(root.named_buffers())}
        return super().trace(root, concrete_args)

    def call_module(self, m, forward, args, kwargs):  # type: ignore[override]
        if self._evaluating:  # computing a concrete value: run the module, record nothing
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):  # type: ignore[override]
        if self._evaluating:
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_proxy(self, kind, target, args, kwargs, name=None, type_expr=None, proxy_factory_fn=None):  # type: ignore[override]
        proxy = super().create_proxy(kind, target, args, kwargs, name, type_expr, proxy_factory_fn)
        real = lambda a: fx.node.map_aggregate(a, lambda v: self.values[v.node] if isinstance(v, fx.Proxy) else v)  # noqa: E731
        a, k = real(args), real(kwargs)
        self._evaluating = True
        try:
            if kind == "placeholder":
                value = self.example.get(target)
            elif kind == "get_attr":
                value = self._attrs.get(target)
                if value is None:
                    value = self.root
                    for part in target.split("."):
                        value = fx._symbolic_trace._orig_module_getattr(value, part) if isinstance(value, nn.Module) \
                            else getattr(value, part)
            elif kind == "call_function":
                value = target(*a, **k)
            elif kind == "call_method":
                value = getattr(a[0], target)(*a[1:], **k)
            elif kind == "call_module":
                value = self.root.get_submodule(target)(*a, **k)
            else:
                value = None
        finally:
            self._evaluating = False
        self.values[proxy.node] = value
        return proxy

    def to_bool(self, obj):  # type: ignore[override]
        return bool(self.values[obj.node])

    def keys(self, obj):  # type: ignore[override]
        return self.values[obj.node].keys()


def _example_kwargs(model: nn.Module, args: tuple, kwargs: dict) -> tuple[dict, dict]:
    """(placeholder name -> example value, concrete_args for the forward's other parameters (their defaults))."""
    import inspect

    sig = inspect.signature(model.forward)
    example: dict[str, object] = {}
    concrete: dict[str, object] = {}
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    for p, a in zip(params, args):
        example[p.name] = a
    example.update(kwargs)
    for p in params:
        if p.name not in example:
            if p.default is inspect.Parameter.empty:
                raise GraphModeError(f"forward parameter {p.name!r} has no example value")
            concrete[p.name] = p.default
    return example, concrete


def _is_plain(v) -> bool:
    if isinstance(v, torch.Size):
        return True
    if isinstance(v, (tuple, list)):
        return all(_is_plain(e) for e in v)
    return isinstance(v, (int, float, bool)) or v is None


def _fold_constants(gm: fx.GraphModule, values: dict) -> None:
    """Replace nodes that do not depend on the inputs and hold plain Python values (a weight's shape, a kernel
    size) by those values: lowering folds weights into packed int8 kernels and cannot leave other users."""
    dynamic: set[fx.Node] = set()
    for node in list(gm.graph.nodes):
        if node.op == "placeholder" or any(a in dynamic for a in node.all_input_nodes):
            dynamic.add(node)
            continue
        if node.op in ("get_attr", "output") or node not in values or not _is_plain(values[node]):
            continue
        v = values[node]
        const = tuple(v) if isinstance(v, torch.Size) else v
        for user in list(node.users):
            user.args = fx.node.map_arg(user.args, lambda a, n=node, c=const: c if a is n else a)
            user.kwargs = fx.node.map_arg(user.kwargs, lambda a, n=node, c=const: c if a is n else a)
    gm.graph.eliminate_dead_code()


_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _normalise_functional(gm: fx.GraphModule) -> None:
    """Functional convolutions with every argument positional and int stride/padding/dilation as tuples (the
    int8 prepack ops take lists only)."""
    for node in gm.graph.nodes:
        dims = _FUNCTIONAL_WEIGHTED.get(node.target) if node.op == "call_function" else None
        if not dims:
            continue
        defaults = (None, None, None, 1, 0, 1, 1)
        full = [node.kwargs.get(name, node.args[i] if i < len(node.args) else defaults[i])
                for i, name in enumerate(_CONV_ARGS)]
        if isinstance(full[4], str):
            raise GraphModeError(f"{node.name}: padding={full[4]!r} in a functional convolution has no int8 kernel")
        for i in (3, 4, 5):
            if isinstance(full[i], int):
                full[i] = (full[i],) * dims
        node.args, node.kwargs = tuple(full), {}


def _simplify(gm: fx.GraphModule) -> None:
    """nn.Flatten calls as ``torch.flatten`` (which int8 tensors pass through; the module form ends an int8
    region) and nn.Identity calls removed."""
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        mod = gm.get_submodule(node.target)
        if type(mod) is nn.Identity:
            node.replace_all_uses_with(node.args[0])
            gm.graph.erase_node(node)
        elif type(mod) is nn.Flatten:
            with gm.graph.inserting_after(node):
                new = gm.graph.call_function(torch.flatten, (node.args[0], mod.start_dim, mod.end_dim))
            new.meta = dict(node.meta)
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
    gm.delete_all_unused_submodules()


def trace(model: nn.Module, args: tuple, kwargs: dict) -> tuple[fx.GraphModule, dict[str, str]]:
    """(GraphModule of ``model`` traced on the example, {functional weighted node name: layer name})."""
    example, concrete = _example_kwargs(model, args, kwargs)
    tracer = _ConcreteTracer(example)
    try:
        with torch.no_grad(), _quiet():
            graph = tracer.trace(model, concrete_args=concrete or None)
    except GraphModeError:
        raise
    except Exception as e:  # noqa: BLE001 - any tracing failure means: no graph mode for this model
        raise GraphModeError(f"tracing failed: {_first_line(e)}") from None
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    _fold_constants(gm, tracer.values)
    _normalise_functional(gm)
    _simplify(gm)
    layers = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _FUNCTIONAL_WEIGHTED and len(node.args) > 1:
            w = node.args[1]
            if isinstance(w, fx.Node) and w.op == "get_attr" and w.target.endswith(".weight"):
                layers[node.name] = w.target[: -len(".weight")]
    gm.recompile()
    return gm, layers


def graph_layers(gm: fx.GraphModule, functional: dict[str, str]) -> dict[str, str]:
    """Every Linear/Conv layer of a traced model: layer name -> "module" (a leaf module call) or "functional"."""
    out = {}
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(gm.get_submodule(node.target), (nn.Linear, nn.Conv1d, nn.Conv2d)):
            out[node.target] = "module"
    for layer in functional.values():
        out.setdefault(layer, "functional")
    return out


def _qconfig_mapping(qc, qat: bool, gm: fx.GraphModule, functional: dict[str, str], skip: set[str]):
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping

    with _quiet():
        default = get_default_qat_qconfig_mapping("x86") if qat else get_default_qconfig_mapping("x86")
    mapping = default.set_global(qc)  # keeps x86's fixed-range qconfigs for sigmoid/tanh/softmax
    mapping.set_object_type("reshape", qc)  # as view: the default (reuse the input's observer) leaves a Linear
    # fed by a float reshape unlowered
    for t in _FLOAT_TYPES:
        mapping.set_object_type(t, None)
    for name in skip:
        mapping.set_module_name(name, None)
    # functional layers of the root graph: switched off by their position among calls of the same op
    order: dict[object, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _FUNCTIONAL_WEIGHTED:
            i = order.get(node.target, 0)
            order[node.target] = i + 1
            if functional.get(node.name) in skip:
                mapping.set_module_name_object_type_order("", node.target, i, None)
    return mapping


def _outputs(model: nn.Module, batches: list[tuple[tuple, dict]]) -> list[torch.Tensor]:
    from ..inputs import as_logits

    with torch.no_grad(), _quiet():
        return [as_logits(model(*args, **kwargs)) for args, kwargs in batches]


def _compare(expected: list[torch.Tensor], model: nn.Module, batches: list[tuple[tuple, dict]]) -> str | None:
    """None if ``model`` gives the ``expected`` outputs on every batch, else what differs (one line)."""
    try:
        got = _outputs(model, batches)
    except Exception as e:  # noqa: BLE001
        return f"the traced graph fails on another batch size: {_first_line(e)}"
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
    from torch.ao.quantization.backend_config import BackendConfig
    from torch.ao.quantization.backend_config.x86 import get_x86_backend_config

    config = get_x86_backend_config()
    if fuse:
        return config
    keep = [c for c in config.configs if c.fuser_method is None and not isinstance(c.pattern, tuple)]
    return BackendConfig("x86_unfused").set_backend_pattern_configs(keep)


def prepare_graph(model: nn.Module, example: tuple[tuple, dict], checks: list[tuple[tuple, dict]], names: list[str],
                  qc, qat: bool, fuse: bool = True) -> fx.GraphModule:
    """Trace ``model``, fuse, and insert observers (PTQ) or fake-quant modules (QAT) for the layers ``names``
    (others stay float); verified against the model on ``checks`` batches. Raises GraphModeError."""
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    use_engine()
    model.eval()
    expected = _outputs(model, checks) if checks else []
    gm, functional = trace(model, *example)  # shares leaf modules with ``model`` (the caller's copy)
    layers = graph_layers(gm, functional)
    missing = [n for n in names if n not in layers]
    if missing:
        raise GraphModeError(f"layer {missing[0]!r} is not called in the traced graph")
    mapping = _qconfig_mapping(qc, qat, gm, functional, set(layers) - set(names))
    args, kwargs = example
    try:
        with _quiet():
            if qat:
                prepared = prepare_qat_fx(gm.train(), mapping, args or tuple(kwargs.values()),
                                          backend_config=_backend_config(fuse))
            else:
                prepared = prepare_fx(gm.eval(), mapping, args or tuple(kwargs.values()),
                                      backend_config=_backend_config(fuse))
    except Exception as e:  # noqa: BLE001
        raise GraphModeError(f"graph-mode preparation failed: {_first_line(e)}") from None
    prepared.meta["functional_layers"] = functional
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
        with _quiet():
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
    from torch.ao.quantization.quantize_fx import convert_fx

    functional = prepared.meta.get("functional_layers", {})
    try:
        with _quiet():
            gm = convert_fx(prepared.eval())
    except Exception as e:  # noqa: BLE001
        raise GraphModeError(f"graph-mode conversion failed: {_first_line(e)}") from None
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
    return gm


def is_graph_quantized(model: nn.Module) -> bool:
    """True for a model made by ``convert_graph`` (an FX GraphModule with int8 kernels)."""
    return isinstance(model, fx.GraphModule) and any(
        node.op == "call_function" and node.target in (torch.quantize_per_tensor, torch.quantize_per_channel)
        for node in model.graph.nodes)
