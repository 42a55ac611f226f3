"""Tracing for graph-mode int8: ``torch.fx`` with concrete values, so Python control flow on shapes takes the
branch the example takes; constants folded, functional convolutions normalised, integer tensors (token ids,
masks) marked so they are never observed, and BatchNorms after functional convolutions folded."""

from __future__ import annotations

import inspect
import threading

import torch
import torch.ao.quantization.quantize_fx as _fx_quant
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .ao_engine import quiet

_FUNCTIONAL_WEIGHTED = {torch.conv1d: 1, torch.conv2d: 2, F.conv1d: 1, F.conv2d: 2, F.linear: 0, torch._C._nn.linear: 0}


class GraphModeError(Exception):
    """The model could not be traced and quantized in graph mode (the message is one line: why)."""


def first_line(e: BaseException) -> str:
    text = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


class _ConcreteTracer(fx.Tracer):
    """torch.fx tracing that also runs every traced op on a real example, so Python control flow on shapes
    (a "same" padding computed in ``forward``, ``max(pad, 0)``) takes the branch the example takes instead of
    failing. Leaf modules are torch's own (``torch.nn`` classes); user subclasses are traced through, so a
    Conv2d subclass with its own ``forward`` keeps it. Graphs specialised this way are verified on other batch
    sizes before use (``prepare_graph``).

    torch.fx patches ``nn.Module.__call__`` and ``__getattr__`` for the whole process while it traces: a model
    running in another thread of the same server (a student's Explore measurement while another's Advise traces
    static int8) was routed into this tracer and failed ("module is not installed as a submodule"). Calls from
    any thread but the tracing one run as if no trace were going on."""

    def __init__(self, example: dict[str, object]):
        super().__init__()
        self.example = example  # placeholder name -> example value
        self.values: dict[fx.Node, object] = {}
        self._evaluating = False
        self._attrs: dict[str, object] = {}
        self._thread = threading.get_ident()

    def _elsewhere(self) -> bool:
        """A module call or attribute read from another thread than the one tracing (not part of this trace)."""
        return threading.get_ident() != self._thread

    def trace(self, root, concrete_args=None):  # type: ignore[override]
        self._thread = threading.get_ident()
        self._attrs = {**dict(root.named_parameters(remove_duplicate=False)), **dict(root.named_buffers())}
        return super().trace(root, concrete_args)

    def call_module(self, m, forward, args, kwargs):  # type: ignore[override]
        if self._evaluating or self._elsewhere():  # a concrete value, or another thread's model: just run it
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):  # type: ignore[override]
        if self._evaluating or self._elsewhere():
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


class _OwnThreadQuantizationTracer(_fx_quant.QuantizationTracer):
    """The tracer ``prepare_fx`` / ``prepare_qat_fx`` trace with, made blind to other threads as ``_ConcreteTracer`` is
    (torch.fx's process-wide patches would route another session's model into this trace)."""

    def trace(self, root, concrete_args=None):  # type: ignore[override]
        self._thread = threading.get_ident()
        return super().trace(root, concrete_args)

    def call_module(self, m, forward, args, kwargs):  # type: ignore[override]
        if threading.get_ident() != getattr(self, "_thread", threading.get_ident()):
            return forward(*args, **kwargs)
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):  # type: ignore[override]
        if threading.get_ident() != getattr(self, "_thread", threading.get_ident()):
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


# prepare_fx builds its tracer by this module-level name: the guarded one (the same class otherwise)
_fx_quant.QuantizationTracer = _OwnThreadQuantizationTracer


def integer_method(x, name: str, *args, **kwargs):
    """``x.<name>(*args, **kwargs)``: a method call on an integer tensor (ids, masks) as one graph function, so the
    quantization config can leave it alone (a call_method cannot be switched off by position)."""
    return getattr(x, name)(*args, **kwargs)


fx.wrap("integer_method")


def _example_kwargs(model: nn.Module, args: tuple, kwargs: dict) -> tuple[dict, dict]:
    """(placeholder name -> example value, concrete_args for the forward's other parameters (their defaults))."""
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
        with torch.no_grad(), quiet():
            graph = tracer.trace(model, concrete_args=concrete or None)
    except GraphModeError:
        raise
    except Exception as e:  # noqa: BLE001 - any tracing failure means: no graph mode for this model
        raise GraphModeError(f"tracing failed: {first_line(e)}") from None
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


__all__ = ["GraphModeError", "first_line", "fold_functional_bn", "graph_layers", "integer_method", "trace"]
