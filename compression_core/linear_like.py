"""Linear-like layers and tied parameters: what every technique that takes ``nn.Linear`` also takes.

Hugging Face's ``Conv1D`` (``transformers.pytorch_utils.Conv1D``, GPT-2's projections and MLP) is a linear layer
with a transposed weight: ``weight`` is (in, out) and ``y = x @ W + b``. Techniques read it through this module:
``is_linear_like``, ``weight_oi`` (the weight as (out, in), a view), ``out_dim`` (which weight dimension holds the
output units) and, where a technique needs a real ``nn.Linear`` (torch.ao's int8 swaps only nn.Linear; Torch-Pruning
has no Conv1D handling of its own), an exact conversion to ``nn.Linear`` and back (``to_linear``/``to_conv1d``;
pruning masks travel with the weight, transposed). Conv1D is recognised by its class without importing transformers:
a model that holds one has already imported ``transformers.pytorch_utils``.

Tied parameters (GPT-2's ``lm_head.weight`` *is* ``transformer.wte.weight``: one Parameter, two modules) are found by
identity (``tied_partners``); a technique that can change only one of the modules leaves it as it is and says so, or
refuses in one line when the layer was named (``leave_tied``).
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from .errors import CompressionError
from .technique import clone_model

CONV1D_NAME = "Conv1D"


# --------------------------------------------------------------------------------------------------- Conv1D
def conv1d_class() -> type[nn.Module] | None:
    """transformers' ``Conv1D`` class if transformers has loaded it (a model holding one has), else None."""
    mod = sys.modules.get("transformers.pytorch_utils")
    cls = getattr(mod, CONV1D_NAME, None) if mod is not None else None
    return cls if isinstance(cls, type) and issubclass(cls, nn.Module) else None


def is_conv1d(module: nn.Module) -> bool:
    cls = conv1d_class()
    return cls is not None and isinstance(module, cls)


def is_linear_like(module: nn.Module) -> bool:
    """``nn.Linear`` (and subclasses) or transformers' ``Conv1D``."""
    return isinstance(module, nn.Linear) or is_conv1d(module)


def with_conv1d(types: tuple[type[nn.Module], ...]) -> tuple[type[nn.Module], ...]:
    """``types`` plus ``Conv1D`` when they include ``nn.Linear`` (a technique that takes Linear takes Conv1D)."""
    cls = conv1d_class()
    if cls is None or cls in types or not any(t is nn.Linear for t in types):
        return tuple(types)
    return tuple(types) + (cls,)


def type_names(types: tuple[type[nn.Module], ...]) -> str:
    """``Linear/Conv1D/Conv2d``: the layer types a technique takes, as a person reads them (Conv1D is named with
    Linear even when transformers is not loaded, so a refusal always says whether it is handled)."""
    names = [t.__name__ for t in types if t is not conv1d_class()]
    if "Linear" in names:
        names.insert(names.index("Linear") + 1, CONV1D_NAME)
    elif len(names) < len(types):
        names.append(CONV1D_NAME)
    return "/".join(dict.fromkeys(names))


def in_out(module: nn.Module) -> tuple[int, int]:
    """(in_features, out_features) of a linear-like layer."""
    if is_conv1d(module):
        return int(module.nx), int(module.nf)
    return int(module.in_features), int(module.out_features)


def out_dim(module: nn.Module) -> int:
    """The dimension of a linear-like layer's ``weight`` that holds its outputs (0 for Linear, 1 for Conv1D)."""
    return 1 if is_conv1d(module) else 0


def weight_oi(module: nn.Module, weight: torch.Tensor | None = None) -> torch.Tensor:
    """A linear-like layer's weight (or ``weight``, a tensor of its weight's shape) as (out, in): a view."""
    w = module.weight if weight is None else weight
    return w.t() if is_conv1d(module) else w


def conv1d_names(model: nn.Module) -> list[str]:
    """Names of the model's Conv1D layers, in module order."""
    return [n for n, m in model.named_modules() if n and is_conv1d(m)]


# ------------------------------------------------------------------------------------------------ converting
def _masked(module: nn.Module, pname: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(the parameter's stored value, its torch.nn.utils.prune mask or None)."""
    mask = getattr(module, pname + "_mask", None)
    orig = getattr(module, pname + "_orig", None)
    if isinstance(mask, torch.Tensor) and isinstance(orig, torch.Tensor):
        return orig, mask
    return getattr(module, pname), None


@torch.no_grad()
def _transfer(src: nn.Module, dst: nn.Module, transpose: bool) -> nn.Module:
    """Copy ``src``'s weight (transposed when ``transpose``) and bias into ``dst``, masks included."""
    for pname in ("weight", "bias"):
        value, mask = _masked(src, pname)
        if value is None:
            continue
        t = value.detach().t() if transpose and pname == "weight" else value.detach()
        getattr(dst, pname).copy_(t)
        getattr(dst, pname).requires_grad_(value.requires_grad)
        if mask is not None:
            m = mask.t() if transpose and pname == "weight" else mask
            torch_prune.custom_from_mask(dst, pname, mask=m.contiguous())
    return dst.train(src.training)


def to_linear(conv: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` computing what a Conv1D computes (weight transposed; masks transposed with it)."""
    nx, nf = in_out(conv)
    w, _ = _masked(conv, "weight")
    b, _ = _masked(conv, "bias")
    lin = nn.Linear(nx, nf, bias=b is not None, dtype=w.dtype, device=w.device)
    return _transfer(conv, lin, transpose=True)


def to_conv1d(linear: nn.Linear) -> nn.Module:
    """The Conv1D computing what ``linear`` computes (the inverse of ``to_linear``; any size)."""
    cls = conv1d_class()
    if cls is None:
        raise CompressionError("model: converting back to Conv1D needs transformers, which is not loaded")
    w, _ = _masked(linear, "weight")
    with torch.random.fork_rng(devices=[]):  # Conv1D draws its initial weight: leave the global RNG alone
        conv = cls(linear.out_features, linear.in_features)
    conv.to(dtype=w.dtype, device=w.device)
    with torch.no_grad():
        conv.bias.zero_()  # Conv1D's forward always adds a bias: zeros where the Linear has none
    return _transfer(linear, conv, transpose=True)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def convert_to_linear(model: nn.Module, names: list[str] | None = None) -> list[str]:
    """Replace the Conv1D layers ``names`` (None: all) of ``model`` by equivalent ``nn.Linear`` layers, in place;
    returns the names converted. A Conv1D whose weight is tied to another module is refused in one line (converting
    it would untie them)."""
    chosen = conv1d_names(model) if names is None else [n for n in names if is_conv1d(model.get_submodule(n))]
    partners = tied_partners(model) if chosen else {}
    for name in chosen:
        if name in partners:
            raise CompressionError(f"targets: {name!r} is a Conv1D whose weight is tied to "
                                   f"{', '.join(repr(p) for p in partners[name])}; converting it would untie them: "
                                   "leave it out with ignore")
        _set(model, name, to_linear(model.get_submodule(name)))
    return chosen


def convert_to_conv1d(model: nn.Module, names: list[str]) -> list[str]:
    """Turn the layers ``names`` back into Conv1D where they are still plain ``nn.Linear`` (in place)."""
    done = []
    for name in names:
        mod = model.get_submodule(name)
        if type(mod) is nn.Linear:
            _set(model, name, to_conv1d(mod))
            done.append(name)
    return done


def linear_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every Conv1D replaced by an equivalent ``nn.Linear`` (same module names)."""
    out = clone_model(model)
    convert_to_linear(out)
    return out


# ---------------------------------------------------------------------------------------------------- tied
def tied_partners(model: nn.Module) -> dict[str, list[str]]:
    """{module name: the other modules holding one of its parameters} for every module that shares a parameter
    (the same tensor, e.g. GPT-2's ``lm_head`` and ``transformer.wte``; a pruning mask's ``*_orig`` counts)."""
    owners: dict[int, list[str]] = {}
    for mname, module in model.named_modules():
        for _, p in module.named_parameters(recurse=False):
            owners.setdefault(id(p), [])
            if mname not in owners[id(p)]:
                owners[id(p)].append(mname)
    out: dict[str, list[str]] = {}
    for names in owners.values():
        if len(names) > 1:
            for n in names:
                out.setdefault(n, [])
                out[n] += [o for o in names if o != n and o not in out[n]]
    return out


def leave_tied(model: nn.Module, names: list[str], targets, technique: str, hint: str = "",
               field: str = "targets") -> tuple[list[str], list[str]]:
    """(the layers of ``names`` the technique may change alone, those left as they are because their weight is
    tied to a module outside ``names``: changing one would untie them and store the matrix twice). A tied layer
    named exactly in ``targets`` is a one-line refusal."""
    partners = tied_partners(model)
    if not partners:
        return list(names), []
    chosen = set(names)
    left = [n for n in names if any(p not in chosen for p in partners.get(n, ()))]
    for n in left:
        if targets and n in targets:
            others = ", ".join(repr(p) for p in partners[n])
            raise CompressionError(f"{field}: {n!r} shares its weight with {others} (tied parameters): {technique} "
                                   f"would change one and store the matrix twice; leave it out"
                                   + (f" ({hint})" if hint else ""))
    return [n for n in names if n not in left], left


def tied_note(model: nn.Module, left: list[str]) -> str:
    """``lm_head (tied to transformer.wte)``: the layers ``leave_tied`` left alone, for a report line."""
    partners = tied_partners(model)
    return ", ".join(f"{n} (tied to {', '.join(partners.get(n, []))})" for n in left)


def say(ctx, line: str) -> None:
    """Put ``line`` in the step's report (``StepContext.note`` where the context has it) and its progress."""
    if ctx is None:
        return
    note = getattr(ctx, "note", None)
    if callable(note):
        note(line)
    ctx.report(0.0, line)


__all__ = ["conv1d_class", "conv1d_names", "convert_to_conv1d", "convert_to_linear", "in_out", "is_conv1d",
           "is_linear_like", "leave_tied", "linear_copy", "out_dim", "say", "tied_note", "tied_partners", "to_conv1d",
           "to_linear", "type_names", "weight_oi", "with_conv1d"]
