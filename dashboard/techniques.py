"""The technique registry as widgets: which techniques a page offers and the controls of each, built from what the
library declares (``registered_configs()``, each config's ``TechniqueUI`` and its pydantic fields: bounds, Literal
choices, optional values). A technique added to the library appears here with no dashboard edit.

Field conventions (by field name, shared by every technique, never by technique kind):
``targets`` / ``ignore`` / ``include_classifier`` come from the page's layer panel; ``overrides`` (layer -> value)
gets one slider per layer; a field whose description says "workload reference" (a distillation teacher) lists the
page's models; ``unit`` choices are the units the library's graph finds in the model; ``seed`` is the recipe's.
"""

from __future__ import annotations

import threading
import types
import typing
import weakref
from dataclasses import dataclass
from typing import Any, Literal

import streamlit as st
from annotated_types import Ge, Gt, Le, Lt
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from torch import nn

from compression_core.technique import StepConfig, TechniqueUI, registered_configs, technique_ui

LAYER_FIELDS = ("targets", "ignore", "include_classifier")
SKIPPED = {"kind", *LAYER_FIELDS, "overrides", "seed"}
LABELS = {  # how a field reads on screen (shared field names; the help text is the field's own description)
    "amount": "Sparsity (fraction removed)", "bits": "Bits per weight", "threshold": "Threshold |w|",
    "epochs": "Epochs", "lr": "Learning rate", "batch_size": "Batch size", "weight_decay": "Weight decay",
    "scope": "Ranking", "unit": "Unit", "importance": "Importance score", "teacher": "Teacher",
    "temperature": "Temperature T", "alpha": "alpha (weight of the teacher's soft targets)",
    "dtype": "Data type", "weights": "Weight scales", "activation_bits": "Activation bits (simulated)",
    "group_size": "Group size (values per scale)", "weight_bits": "Weight bits", "count": "How many (least important first)",
}
PRIMARY = 3  # fields shown directly; the rest go into "More settings"


@dataclass(frozen=True)
class Technique:
    kind: str
    cls: type[StepConfig]
    ui: TechniqueUI

    @property
    def label(self) -> str:
        return self.ui.label

    def fields(self) -> dict[str, FieldInfo]:
        return dict(self.cls.model_fields)


def all_techniques() -> list[Technique]:
    """Every registered technique, by family then the order it declares."""
    out = [Technique(c.model_fields["kind"].default, c, technique_ui(c)) for c in registered_configs()]
    return sorted(out, key=lambda t: (t.ui.family, t.ui.order, t.ui.label))


def by_kind(kind: str) -> Technique | None:
    return next((t for t in all_techniques() if t.kind == kind), None)


def family(name: str) -> list[Technique]:
    """The offered (not hidden) techniques of a family."""
    return [t for t in all_techniques() if t.ui.family == name and not t.ui.hidden]


def is_addon(t: Technique) -> bool:
    """A technique with no settings of its own (e.g. shrink): offered as a checkbox after its family's choice."""
    return not [n for n in t.fields() if n != "kind"]


# --------------------------------------------------------------------------------------------------- layers
def type_names(module: nn.Module) -> set[str]:
    """The class names of ``module`` and its bases (a Conv2d subclass is still a Conv2d)."""
    return {c.__name__ for c in type(module).__mro__}


# (module name, its class names) per model, in module order: Explore asks layers_of ~20 times per run, and walking
# a 100-module transformer's tree each time was ~20 ms of every slider move. Kept per model object while it lives:
# the pages ask about workloads' baseline models, which nothing changes (techniques never mutate their input).
_SCANS: "weakref.WeakKeyDictionary[nn.Module, list[tuple[str, set[str]]]]" = weakref.WeakKeyDictionary()
_SCANS_LOCK = threading.Lock()


def _scan(model: nn.Module) -> list[tuple[str, set[str]]]:
    with _SCANS_LOCK:
        rows = _SCANS.get(model)
        if rows is None:
            rows = _SCANS[model] = [(n, type_names(m)) for n, m in model.named_modules() if n]
        return rows


def layers_of(model: nn.Module, layer_types: tuple[str, ...], classifier: str | None, include_classifier: bool) -> list[str]:
    """Module names whose type is one of ``layer_types`` (the classifier left out unless included)."""
    wanted = set(layer_types)
    return [n for n, names in _scan(model) if names & wanted and (include_classifier or n != classifier)]


def selectable_layers(model: nn.Module, classifier: str | None, include_classifier: bool) -> list[str]:
    """The layers the page's layer panel lists: every layer some offered technique acts on (norm layers, which
    no technique compresses on their own, left out)."""
    wanted = {t for tech in all_techniques() if not tech.ui.hidden for t in tech.ui.layer_types if "Norm" not in t}
    return layers_of(model, tuple(wanted), classifier, include_classifier)


def applicable(t: Technique, model: nn.Module, classifier: str | None, include_classifier: bool) -> bool:
    """True when the model has a layer the technique acts on (whole-model techniques always apply)."""
    return not t.ui.layer_types or bool(layers_of(model, t.ui.layer_types, classifier, include_classifier))


# --------------------------------------------------------------------------------------------------- fields
def _split_optional(ann: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(ann)) == 2:
            return args[0], True
    return ann, False


def _unwrap(ann: Any, metadata: list) -> tuple[Any, list]:
    """``Annotated[int, Field(ge=2)]`` -> (int, [Ge(2)])."""
    meta = list(metadata)
    while typing.get_origin(ann) is typing.Annotated:
        base, *extra = typing.get_args(ann)
        for e in extra:
            meta += list(getattr(e, "metadata", [])) if isinstance(e, FieldInfo) else [e]
        ann = base
    return ann, meta


def bounds(meta: list) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low inclusive, high inclusive) from annotated-types constraints."""
    lo = hi = None
    lo_inc = hi_inc = True
    for m in meta:
        if isinstance(m, Ge):
            lo, lo_inc = m.ge, True
        elif isinstance(m, Gt):
            lo, lo_inc = m.gt, False
        elif isinstance(m, Le):
            hi, hi_inc = m.le, True
        elif isinstance(m, Lt):
            hi, hi_inc = m.lt, False
    return lo, hi, lo_inc, hi_inc


@dataclass(frozen=True)
class FieldSpec:
    name: str
    kind: str  # "bool" | "choice" | "int" | "float" | "reference"
    default: Any
    optional: bool
    choices: tuple = ()
    lo: float | None = None
    hi: float | None = None
    lo_inc: bool = True
    hi_inc: bool = True
    help: str | None = None


def field_spec(name: str, f: FieldInfo) -> FieldSpec | None:
    """How to offer one config field, or None when it is not a simple value (lists, unions of types, ...)."""
    ann, optional = _split_optional(f.annotation)
    ann, meta = _unwrap(ann, f.metadata)
    default = f.get_default(call_default_factory=True)
    desc = f.description
    if ann is bool:
        return FieldSpec(name, "bool", bool(default), optional, help=desc)
    if typing.get_origin(ann) is Literal:
        return FieldSpec(name, "choice", default, optional, choices=typing.get_args(ann), help=desc)
    if ann is str and "workload reference" in (desc or ""):
        return FieldSpec(name, "reference", default, optional, help=desc)
    if ann in (int, float):
        lo, hi, lo_inc, hi_inc = bounds(meta)
        return FieldSpec(name, ann.__name__, default, optional, lo=lo, hi=hi, lo_inc=lo_inc, hi_inc=hi_inc, help=desc)
    return None


def specs(t: Technique) -> list[FieldSpec]:
    """The fields a page shows for ``t``, in declaration order; ``epochs`` first among them for techniques that
    train (how long it trains is the first question)."""
    out = [s for n, f in t.fields().items() if n not in SKIPPED and (s := field_spec(n, f)) is not None]
    if t.ui.trains:
        out.sort(key=lambda s: s.name != "epochs")
    return out


def initial_values(t: Technique) -> dict[str, Any]:
    """Defaults of the shown fields; when the config refuses its own defaults (one of two optional fields must be
    given), the first optional number is set to its lowest allowed value."""
    values = {s.name: s.default for s in specs(t)}
    try:
        t.cls(**{k: v for k, v in values.items() if v is not None})
    except ValidationError:
        for s in specs(t):
            if s.optional and s.kind in ("int", "float") and s.lo is not None and values[s.name] is None:
                values[s.name] = s.lo if s.lo_inc else s.lo + (1 if s.kind == "int" else 0.05)
                break
    return values


def _step(lo: float, hi: float) -> float:
    span = hi - lo
    return 0.05 if span <= 1 else 0.5 if span <= 10 else 1.0 if span <= 100 else span / 100


def _label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def _choice_text(v: Any) -> str:
    return "none" if v is None else str(v)


def widget(container, s: FieldSpec, key: str, value: Any, choices: tuple | None = None, models: list[str] | None = None,
           model_label=None) -> Any:
    """One control for one field; returns its value (None = leave the config's default)."""
    lab, hp = _label(s.name), s.help
    if key not in st.session_state:
        st.session_state[key] = value
    if s.kind == "bool":
        return container.checkbox(lab, key=key, help=hp)
    if s.kind == "choice":
        opts = list(choices if choices is not None else s.choices) + ([None] if s.optional else [])
        if st.session_state.get(key) not in opts:
            st.session_state[key] = opts[0]
        if len(opts) <= 4 and all(len(_choice_text(o)) <= 12 for o in opts):
            return container.radio(lab, opts, key=key, horizontal=True, format_func=_choice_text, help=hp)
        return container.selectbox(lab, opts, key=key, format_func=_choice_text, help=hp)
    if s.kind == "reference":
        opts = [None] + list(models or [])
        if st.session_state.get(key) not in opts:
            st.session_state[key] = None
        fmt = (lambda r: "the uncompressed model itself" if r is None else (model_label(r) if model_label else r))
        return container.selectbox(lab, opts, key=key, format_func=fmt, help=hp)
    lo, hi = s.lo, s.hi
    if s.kind == "int":
        lo_i = None if lo is None else int(lo if s.lo_inc else lo + 1)
        hi_i = None if hi is None else int(hi if s.hi_inc else hi - 1)
        if lo_i is not None and hi_i is not None and hi_i - lo_i <= 64:
            if s.optional:
                opts = ["off"] + list(range(lo_i, hi_i + 1))
                if st.session_state.get(key) is None:
                    st.session_state[key] = "off"
                v = container.select_slider(lab, opts, key=key, help=hp)
                return None if v == "off" else int(v)
            return container.slider(lab, lo_i, hi_i, step=1, key=key, help=hp)
        return container.number_input(lab, min_value=lo_i, max_value=hi_i, step=1, key=key, help=hp)
    # float
    if lo is not None and hi is not None and (not s.default or s.default >= (hi - lo) / 100):
        step = _step(lo, hi)
        lo_f = float(lo if s.lo_inc else lo + step)
        hi_f = float(hi if s.hi_inc else hi - step)
        cur = st.session_state.get(key)
        if cur is not None and not lo_f <= cur <= hi_f:
            st.session_state[key] = min(max(cur, lo_f), hi_f)
        return container.slider(lab, lo_f, hi_f, step=step, key=key, help=hp, format="%.3g" if step < 0.05 else None)
    step = (abs(s.default) / 2) if s.default else 0.005
    return container.number_input(lab, min_value=float(lo) if lo is not None and s.lo_inc else None,
                                  max_value=float(hi) if hi is not None and s.hi_inc else None,
                                  step=float(f"{step:.1g}"), format="%g", key=key, help=hp)


def override_levels(t: Technique, fit_levels: tuple[float, ...]) -> list | None:
    """The values a per-layer override slider offers, from the type of the config's ``overrides`` values: a bits
    range, Literal choices, or (fractions) the budget fit's sparsity grid within the values' own bounds; None when
    the type gives no range."""
    f = t.fields().get("overrides")
    if f is None:
        return None
    args = typing.get_args(f.annotation)
    if len(args) != 2:
        return None
    ann, meta = _unwrap(args[1], [])
    if typing.get_origin(ann) is Literal:
        return list(typing.get_args(ann))
    lo, hi, lo_inc, hi_inc = bounds(meta)
    if ann is int and lo is not None and hi is not None:
        return list(range(int(lo), int(hi) + 1))
    if ann is float:  # fractions, when the technique's own fraction field is bounded within [0, 1]
        for s in specs(t):
            if s.kind == "float" and s.lo is not None and s.hi is not None and 0 <= s.lo and s.hi <= 1:
                # the grid, kept to the override type's own range (a rank ratio is in (0, 1]: no 0, and 1 kept)
                grid = [v for v in fit_levels if (lo is None or (v >= lo if lo_inc else v > lo))
                        and (hi is None or (v <= hi if hi_inc else v < hi))]
                if hi is not None and hi_inc and 0 <= hi <= 1 and float(hi) not in grid:
                    grid.append(float(hi))
                return grid
    return None


def form(container, t: Technique, *, ref: str, model_units: set[str] | None = None, models: list[str] | None = None,
         model_label=None) -> dict[str, Any]:
    """The controls of ``t``'s settings (keys ``x_<kind>_<field>``, a reference field per model); returns the
    step's fields whose value differs from the config's default."""
    shown = specs(t)
    init = initial_values(t)
    values: dict[str, Any] = {}
    more = None
    for i, s in enumerate(shown):
        box = container
        if i >= PRIMARY:
            more = more or container.expander("More settings")
            box = more
        key = f"x_{t.kind}_{s.name}" + (f"_{ref}" if s.kind == "reference" else "")
        choices = None
        if s.kind == "choice" and s.name == "unit" and model_units is not None:
            choices = tuple(c for c in s.choices if c in model_units) or s.choices
        v = widget(box, s, key, init[s.name], choices=choices, models=models, model_label=model_label)
        if isinstance(v, float) and s.kind == "int":
            v = int(v)
        if v != s.default or (s.default is None and v is not None):
            values[s.name] = v
    return values


def step(t: Technique, values: dict[str, Any], targets: list[str] | None, include_classifier: bool,
         overrides: dict[str, Any] | None = None) -> dict:
    """A recipe step of ``t`` with the page's layer choice (``targets`` only when the user narrowed it, restricted
    to the layers this technique acts on; ``include_classifier`` always explicit where the config has it)."""
    fields = t.fields()
    out: dict[str, Any] = {"kind": t.kind, **values}
    if "targets" in fields and targets is not None:
        out["targets"] = list(targets)
    if "include_classifier" in fields:
        out["include_classifier"] = bool(include_classifier)
    if overrides and "overrides" in fields:
        out["overrides"] = dict(overrides)
    return out
