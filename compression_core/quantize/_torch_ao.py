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
    """Swap observed modules for real int8 modules using the observed ranges (in place, eval mode); the scales and
    zero points are saved as one vector (``compact_scalars``)."""
    with _quiet():
        return compact_scalars(_tq.convert(model.eval(), inplace=True))


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


def integer_method(x, name: str, *args, **kwargs):
    """``x.<name>(*args, **kwargs)``: a method call on an integer tensor (ids, masks) as one graph function, so the
    quantization config can leave it alone (a call_method cannot be switched off by position)."""
    return getattr(x, name)(*args, **kwargs)


fx.wrap("integer_method")


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
    ints = {n.name for n, v in tracer.values.items()
            if isinstance(v, torch.Tensor) and not v.is_floating_point() and n.op != "get_attr"}
    gm.meta["integer_nodes"] = ints  # token ids, masks and their arithmetic: never observed or fake-quantized
    for node in gm.graph.nodes:  # methods on them as functions, which a qconfig can switch off one by one
        if node.op == "call_method" and (node.name in ints or any(a.name in ints for a in node.all_input_nodes)):
            method = node.target
            node.op, node.target = "call_function", integer_method
            node.args = (node.args[0], method, *node.args[1:])
            node.meta["is_wrapped"] = True  # stays one call when prepare_fx traces the graph again
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in _FUNCTIONAL_WEIGHTED and len(node.args) > 1:
            w = node.args[1]
            if isinstance(w, fx.Node) and w.op == "get_attr" and w.target.endswith(".weight"):
                layers[node.name] = w.target[: -len(".weight")]
    gm.recompile()
    return gm, layers


def fold_functional_bn(gm: fx.GraphModule, functional: dict[str, str]) -> int:
    """Fold an eval-mode BatchNorm that follows a functional convolution (a Conv2d subclass traced through: its
    ``F.conv2d`` call) into that convolution's weight and bias, as torch.ao fuses module convs; the graph's
    modules are the caller's copy. Returns how many were folded."""
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), nn.BatchNorm2d):
            continue
        conv = node.args[0]
        if not (isinstance(conv, fx.Node) and conv.name in functional and len(conv.users) == 1
                and _FUNCTIONAL_WEIGHTED.get(conv.target) == 2):
            continue
        bn = gm.get_submodule(node.target)
        if bn.training or not bn.track_running_stats:
            continue
        w_node, b_node = conv.args[1], conv.args[2]
        if not (isinstance(w_node, fx.Node) and w_node.op == "get_attr"):
            continue
        owner_name, _, _ = w_node.target.rpartition(".")
        owner = gm.get_submodule(owner_name) if owner_name else gm
        w = owner.weight
        b = getattr(owner, "bias", None) if isinstance(b_node, fx.Node) else None
        new_w, new_b = fuse_conv_bn_weights(w, b, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
        owner.weight = new_w
        if "bias" in owner._parameters or "bias" not in owner.__dict__:
            owner._parameters["bias"] = new_b
        if not isinstance(b_node, fx.Node):
            with gm.graph.inserting_before(conv):
                b_node = gm.graph.get_attr(f"{owner_name}.bias" if owner_name else "bias")
            conv.args = (conv.args[0], w_node, b_node, *conv.args[3:])
        node.replace_all_uses_with(conv)
        gm.graph.erase_node(node)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.recompile()
        gm.delete_all_unused_submodules()
    return folded


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
    return compact_scalars(gm)


# ------------------------------------------------------------------------------------ compact scalar state
# An int8 graph keeps a scale and a zero point per activation and per layer as 0-d tensors: dozens of state entries,
# and torch.save spends a record (~0.4-0.6 KB with its alignment) on each. On a small CNN that framing outweighs what
# int8 weights save. The state_dict of a converted model packs them into one float64 vector ``_scalars`` (exact for
# float32 scales and integer zero points) and loading unpacks it by the replayed structure's own keys.
_SCALARS = "_scalars"


def _scalar_keys(state: dict, prefix: str) -> list[str]:
    return [k for k, v in state.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)
            and not v.is_quantized and v.dim() == 0 and (v.is_floating_point() or not v.dtype.is_complex)]


def _pack_scalars(module: nn.Module, state: dict, prefix: str, local_metadata) -> None:
    if not getattr(module, "_pack_scalars", True):
        return
    keys = _scalar_keys(state, prefix)
    if len(keys) < 2:
        return
    state[prefix + _SCALARS] = torch.tensor([float(state[k]) for k in keys], dtype=torch.float64)
    for k in keys:
        del state[k]


def _unpack_scalars(module: nn.Module, state: dict, prefix: str, *args) -> None:
    packed = state.pop(prefix + _SCALARS, None)
    if packed is None:
        return
    module._pack_scalars = False
    try:
        own = module.state_dict(prefix=prefix)
    finally:
        module._pack_scalars = True
    keys = _scalar_keys(own, prefix)
    if len(keys) != packed.numel():  # a different structure: let strict loading name the mismatch
        state[prefix + _SCALARS] = packed
        return
    for k, v in zip(keys, packed.tolist()):
        state[k] = torch.tensor(v, dtype=own[k].dtype)


def compact_scalars(model: nn.Module) -> nn.Module:
    """Save ``model``'s 0-d tensors (scales, zero points) as one ``_scalars`` vector and load them back (hooks on the
    root module, kept by deepcopy)."""
    model._register_state_dict_hook(_pack_scalars)
    model._register_load_state_dict_pre_hook(_unpack_scalars, with_module=True)
    return model


def is_graph_quantized(model: nn.Module) -> bool:
    """True for a model made by ``convert_graph`` (an FX GraphModule with int8 kernels)."""
    return isinstance(model, fx.GraphModule) and any(
        node.op == "call_function" and node.target in (torch.quantize_per_tensor, torch.quantize_per_channel)
        for node in model.graph.nodes)


# --------------------------------------------------------------------------------------------- QDQ export
# An int8 model of torch.ao (graph or eager) as a float model with explicit quantize/dequantize ops
# (``torch.ops.quantized_decomposed``): the same arithmetic, in a form torch.onnx exports as ONNX QDQ (int8
# weight initializers, QuantizeLinear/DequantizeLinear at the observed or learned activation ranges) that ONNX
# Runtime fuses into its int8 kernels. Nothing is re-calibrated: the ranges are the ones torch computed.
import torch.ao.nn.intrinsic.quantized as _nniq  # noqa: E402
import torch.ao.nn.quantized as _nnq  # noqa: E402

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
    import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed

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
    import copy

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


# ------------------------------------------------------------------------------------- dynamic int8 back to float
def is_dynamic_module(module: nn.Module) -> bool:
    """A dynamic int8 module of torch.ao (Linear, LSTM, GRU)."""
    return isinstance(module, (_nnqd.Linear, _nnqd.modules.rnn.RNNBase))


def dequantized_float(module: nn.Module) -> nn.Module:
    """The float module a dynamic int8 module computes like: its int8 weights dequantized (what ONNX Runtime's
    dynamic int8 then quantizes again, per channel)."""
    with _quiet(), torch.no_grad():
        if isinstance(module, _nnqd.Linear):
            w, b = module.weight(), module.bias()
            lin = nn.Linear(module.in_features, module.out_features, bias=b is not None)
            lin.weight.copy_(w.dequantize() if w.is_quantized else w)
            if b is not None:
                lin.bias.copy_(b)
            return lin.eval()
        if isinstance(module, _nnqd.modules.rnn.RNNBase):
            cls = {"LSTM": nn.LSTM, "GRU": nn.GRU}[module.mode]
            rnn = cls(module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first,
                      float(module.dropout), module.bidirectional)
            for name, t in rnn_weights(module).items():
                getattr(rnn, name).copy_(t.dequantize() if t.is_quantized else t)
            return rnn.eval()
    raise TypeError(f"{type(module).__name__} is not a dynamic int8 module")
