"""A workload: everything a technique and a measurement need (the model, its data splits, its metric), independent
of where the model came from; references to workloads (``file.py:attr``, ``package.module:attr``, a registered
name) and the registry of named workloads.

>>> wl = Workload(name="my-net", model=net, train=(x_tr, y_tr), test=(x_te, y_te))
>>> wl = resolve_workload("examples/my_workload.py:workload")      # or "pkg.mod:make", or "digits-cnn"
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from . import inputs as I
from .errors import CompressionError
from .inputs import predict

ENTRY_POINT_GROUP = "compression_lab.workloads"
DEFAULT_CALIB_ITEMS = 256


# ---------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Split:
    """Inputs (a tensor, integer token ids, or a dict of tensors) and their targets (None: no labels)."""

    x: Any
    y: torch.Tensor | None = None

    def __len__(self) -> int:
        return I.n_items(self.x)

    def take(self, index) -> "Split":
        return Split(I.take(self.x, index), None if self.y is None else self.y[index])


@dataclass(frozen=True)
class DataSplits:
    train: Split | None
    calib: Split | None
    test: Split


# -------------------------------------------------------------------------------------------------- metric
def top1(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Fraction of rows whose largest output is the target class (of every position, for sequence outputs
    (B, T, classes) with targets (B, T): a language model's next tokens)."""
    if targets.numel() == 0:
        return 0.0
    return int((outputs.argmax(-1) == targets).sum()) / targets.numel()


@dataclass(frozen=True)
class Metric:
    """``fn(outputs, targets) -> float`` shown as ``name`` (``unit``: ``%`` for fractions); higher is better unless
    ``higher_is_better=False`` (perplexity, a loss)."""

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], float] = field(compare=False)
    percent: bool = True  # a fraction in [0, 1], shown as a percentage
    higher_is_better: bool = True

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor) -> float:
        return float(self.fn(outputs, targets))


def metric_up(metric: Any) -> bool:
    """The metric's direction: ``Metric.higher_is_better`` (a bool is taken as the direction itself; True for
    anything without one)."""
    if isinstance(metric, bool):
        return metric
    return bool(getattr(metric, "higher_is_better", True))


def metric_loss(metric: Any, before: float, after: float) -> float:
    """How much worse ``after`` is than ``before`` in the unit drops and budgets use (``loss_unit``): percentage
    points (x100) for a higher-is-better metric; for a lower-is-better one (perplexity, a loss) the rise in percent
    of ``before`` (perplexity 20 -> 21 is 5.0), as people budget perplexity ("within +5 %"). Negative: better."""
    if metric_up(metric):
        return (before - after) * 100
    return (after - before) / max(abs(before), 1e-12) * 100


def loss_unit(metric: Any) -> str:
    """What ``metric_loss`` counts in: ``points`` or ``% rise`` (lower-is-better metrics)."""
    return "points" if metric_up(metric) else "% rise"


def better(metric: Any, a: float, b: float) -> bool:
    """True when the metric value ``a`` is strictly better than ``b`` (lower for a lower-is-better metric)."""
    return a > b if metric_up(metric) else a < b


ACCURACY = Metric("accuracy", top1)
AGREEMENT = Metric("agreement", top1)  # top-1 against the uncompressed model's own predictions


def _as_metric(metric: Any) -> Metric:
    if metric is None or metric == "accuracy":
        return ACCURACY
    if metric == "agreement":
        return AGREEMENT
    if isinstance(metric, Metric):
        return metric
    if callable(metric):
        return Metric(getattr(metric, "__name__", "metric").replace("_", " "), metric, percent=False)
    raise CompressionError(f"metric: expected 'accuracy', 'agreement', a Metric or a callable, got {metric!r}")


# ------------------------------------------------------------------------------------------------ workload
def _as_split(value: Any, field_name: str) -> Split | None:
    if value is None:
        return None
    if isinstance(value, Split):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        x, y = value
    elif isinstance(value, (torch.Tensor, Mapping)):
        x, y = value, None
    else:
        raise CompressionError(f"{field_name}: expected (inputs, targets) or inputs, got {type(value).__name__}")
    if not (isinstance(x, torch.Tensor) or (isinstance(x, Mapping) and x and
                                            all(isinstance(v, torch.Tensor) for v in x.values()))):
        raise CompressionError(f"{field_name}: inputs must be a tensor or a dict of tensors, got {type(x).__name__}")
    n = I.n_items(x)
    if isinstance(x, Mapping) and any(int(v.shape[0]) != n for v in x.values()):
        raise CompressionError(f"{field_name}: every tensor of a dict input needs the same first dimension")
    if y is not None:
        if not isinstance(y, torch.Tensor):
            y = torch.as_tensor(y)
        if int(y.shape[0]) != n:
            raise CompressionError(f"{field_name}: {n} inputs but {int(y.shape[0])} targets")
    if n == 0:
        raise CompressionError(f"{field_name}: is empty")
    return Split(x, y)


def reinitialized(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with fresh weights: ``reset_parameters()`` on every module that has one."""
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh


@dataclass(frozen=True, eq=False)
class Workload:
    """A model with its data splits and metric: what every technique, measurement and page works on.

    Required: ``name``, ``model``, ``test``. ``train`` is needed by techniques that train (they refuse without it);
    ``calib`` defaults to a slice of ``train`` (else of ``test``); ``classifier`` (the output layer, left alone by
    default) defaults to the last Linear in module order; ``metric`` is ``"accuracy"`` (top-1, the default),
    ``"agreement"`` (top-1 against the uncompressed model's predictions: no labels needed), a ``Metric`` or any
    ``(outputs, targets) -> float`` (higher is better). ``build`` makes the architecture with fresh weights (lottery
    tickets rewind to it; default: ``reset_parameters()`` on a copy). ``reference`` is how to load it again (set by
    ``resolve_workload``); ``info`` holds free-form facts for listings (task, architecture, baseline metric).
    """

    name: str
    model: nn.Module
    test: Any
    train: Any = None
    calib: Any = None
    classifier: str | None = None
    metric: Any = None
    description: str = ""
    build: Callable[[], nn.Module] | None = field(default=None, repr=False)
    lr: float = 1e-3
    seed: int = 0
    reference: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict, repr=False)
    notes: tuple[str, ...] = ()  # one line each, set by resolve_workload: inputs cast, outputs reduced

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise CompressionError("name: a workload needs a non-empty name")
        if not isinstance(self.model, nn.Module):
            raise CompressionError(f"model: expected a torch.nn.Module, got {type(self.model).__name__}")
        metric = _as_metric(self.metric)
        test = _as_split(self.test, "test")
        train = _as_split(self.train, "train")
        calib = _as_split(self.calib, "calib")
        if test is None:
            raise CompressionError("test: a workload needs a test split (inputs, targets)")
        if calib is None:
            src = train if train is not None else test
            step = max(1, len(src) // DEFAULT_CALIB_ITEMS)
            calib = src.take(torch.arange(0, len(src), step)[:DEFAULT_CALIB_ITEMS])
        self.model.eval()
        if metric is AGREEMENT:  # targets are the uncompressed model's own predictions
            test, train, calib = (None if s is None else Split(s.x, _predictions(self.model, s.x))
                                  for s in (test, train, calib))
        elif test.y is None:
            raise CompressionError(
                "test: no targets given; pass (inputs, targets), or metric='agreement' to compare with the "
                "uncompressed model's predictions")
        if self.classifier is not None:
            names = dict(self.model.named_modules())
            if self.classifier not in names:
                raise CompressionError(f"classifier: {self.classifier!r} is not a module of the model")
        object.__setattr__(self, "test", test)
        object.__setattr__(self, "train", train)
        object.__setattr__(self, "calib", calib)
        object.__setattr__(self, "metric", metric)
        object.__setattr__(self, "info", dict(self.info))

    # DataSplits-compatible view: techniques read ``workload.train.x`` etc.
    @property
    def data(self) -> "Workload":
        return self

    @property
    def metric_name(self) -> str:
        return self.metric.name

    @property
    def output_layer(self) -> str | None:
        """The classifier layer: as given, else the last Linear layer in module order."""
        if self.classifier:
            return self.classifier
        names = [n for n, m in self.model.named_modules() if isinstance(m, nn.Linear)]
        return names[-1] if names else None

    @property
    def input_shape(self) -> tuple[int, ...] | None:
        """Per-sample shape of a tensor input (None for dict inputs)."""
        x = self.test.x
        return None if I.is_dict(x) else tuple(x.shape[1:])

    def fresh_model(self, seed: int = 0) -> nn.Module:
        """The architecture with freshly initialised weights, reproducibly for ``seed``."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + seed)
            return self.build() if self.build is not None else reinitialized(self.model)

    def needs(self, split: str, what: str) -> Split:
        """``self.<split>`` or a one-line error saying ``what`` needs it."""
        s = getattr(self, split)
        if s is None:
            raise CompressionError(f"data: {what} needs the workload's {split} split; give {split}=(inputs, targets) "
                                   f"in Workload({self.name!r})")
        return s

    def score(self, model: nn.Module, split: str = "test") -> float:
        """The workload's metric of ``model`` on ``split``."""
        s = self.needs(split, "scoring")
        return self.metric(predict(model, s.x), s.y)


@torch.no_grad()
def _predictions(model: nn.Module, x: Any) -> torch.Tensor:
    return predict(model, x).argmax(-1)


def as_workload(obj: Any, model: nn.Module | None = None) -> "Workload | None":
    """``obj`` as a Workload: a Workload itself, or plain data splits (``train/calib/test`` with ``x``/``y``) around
    ``model`` (the Python API's older form); None stays None."""
    if obj is None or isinstance(obj, Workload):
        return obj
    convert = getattr(obj, "as_workload", None)  # anything that knows how to describe itself as a workload
    if callable(convert):
        return convert()
    if all(hasattr(obj, a) for a in ("train", "calib", "test")) and model is not None:
        return Workload(name="model", model=model, train=obj.train, calib=obj.calib, test=obj.test)
    raise CompressionError(f"workload: expected a compression_core.Workload, got {type(obj).__name__}")


# ------------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class Registered:
    name: str
    factory: Callable[[], Workload] = field(repr=False)
    info: Mapping[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, Registered] = {}
_LOCK = threading.RLock()
_PLUGINS_LOADED = False
_CACHE: dict[str, Workload] = {}


def register_workload(name: str, factory: Callable[[], Workload], info: Mapping[str, Any] | None = None) -> None:
    """Make ``name`` a plain reference to the workload ``factory()`` builds (``info``: cheap facts for listings)."""
    with _LOCK:
        _REGISTRY[name] = Registered(name, factory, dict(info or {}))
        _CACHE.pop(name, None)


def _load_plugins() -> None:
    """Workloads that installed packages register through the ``compression_lab.workloads`` entry point group."""
    global _PLUGINS_LOADED
    with _LOCK:
        if _PLUGINS_LOADED:
            return
        _PLUGINS_LOADED = True
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                hook = ep.load()
            except ImportError:
                continue
            if callable(hook):
                hook()


def registered_workloads() -> dict[str, Registered]:
    """Every registered workload by name (the samples and whatever ``register_workload`` added)."""
    _load_plugins()
    with _LOCK:
        return dict(_REGISTRY)


def workload_names() -> tuple[str, ...]:
    return tuple(registered_workloads())


def is_reference(ref: str) -> bool:
    """True for ``file.py:attr`` / ``pkg.mod:attr`` (not a plain registered name)."""
    return ":" in ref


def _resolve_path(path: str, base_dir: str | Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p.resolve()


def canonical_reference(ref: str, base_dir: str | Path | None = None) -> str:
    """``ref`` with a file path made absolute (a bundle reloads it from anywhere); names and modules unchanged."""
    if not is_reference(ref):
        return ref
    target, _, attr = ref.rpartition(":")
    if target.endswith(".py") or os.sep in target or "/" in target:
        return f"{_resolve_path(target, base_dir)}:{attr}"
    return ref


def _load_attr(ref: str, base_dir: str | Path | None) -> Any:
    target, _, attr = ref.rpartition(":")
    if not target or not attr:
        raise CompressionError(f"model: bad reference {ref!r}; write path/to/file.py:attr or package.module:attr")
    if target.endswith(".py") or "/" in target or os.sep in target:
        path = _resolve_path(target, base_dir)
        if not path.is_file():
            raise CompressionError(f"model: no such workload file {str(path)!r} (from reference {ref!r})")
        mod_name = "_compression_lab_workload_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise CompressionError(f"model: cannot load {str(path)!r} as Python")
        module = importlib.util.module_from_spec(spec)
        sys.path.insert(0, str(path.parent))  # the file may import its neighbours
        try:
            spec.loader.exec_module(module)
        except CompressionError:
            raise
        except Exception as e:
            raise CompressionError(f"model: {str(path)!r} failed to import ({type(e).__name__}: {_first(e)})") from None
        finally:
            try:
                sys.path.remove(str(path.parent))
            except ValueError:
                pass
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            raise CompressionError(f"model: no module {target!r} ({_first(e)}); is it installed or on PYTHONPATH?") from None
        except Exception as e:
            raise CompressionError(f"model: module {target!r} failed to import ({type(e).__name__}: {_first(e)})") from None
    if not hasattr(module, attr):
        raise CompressionError(f"model: {target!r} has no attribute {attr!r}")
    return getattr(module, attr)


def _first(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:200]


def _build(obj: Any, label: str) -> Workload:
    if callable(obj) and not isinstance(obj, (Workload, nn.Module)):
        try:
            obj = obj()
        except CompressionError as e:
            raise CompressionError(f"model: {label}: {e}") from None
        except Exception as e:
            raise CompressionError(f"model: {label}() failed ({type(e).__name__}: {_first(e)})") from None
    if not isinstance(obj, Workload):
        raise CompressionError(f"model: {label} is a {type(obj).__name__}, not a compression_core.Workload "
                               "(return Workload(name=..., model=..., test=...))")
    return obj


CHECK_ITEMS = 8  # test items the model runs on when a workload is loaded


def _check_forward(wl: Workload, label: str) -> tuple[str, ...]:
    """Run the model on its first test inputs. A model that cannot take its own data, returns non-finite outputs, or
    whose top-1 metric's labels lie outside its outputs is refused in one line; a silent cast of the inputs or a
    reduction of the outputs is returned as a one-line note each."""
    x = I.take(wl.test.x, slice(0, CHECK_ITEMS))
    n = I.n_items(x)
    model = wl.model
    dtype = I.input_dtype(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            cast = I.cast_floats(x, dtype)
            raw = model(**cast) if I.is_dict(cast) else model(cast)
            out = I.as_logits(raw).float()
    except Exception as e:
        raise CompressionError(f"model: {label}: the model's forward fails on its test inputs "
                               f"{I.shape_text(x)} ({type(e).__name__}: {_first(e)})") from None
    finally:
        model.train(was_training)
    if out.dim() == 0 or out.shape[0] != n:
        raise CompressionError(f"model: {label}: the model returned {tuple(out.shape)} for {n} inputs; "
                               "the first dimension must be the batch")
    bad = int((~torch.isfinite(out)).sum())
    if bad:
        raise CompressionError(f"model: {label}: {bad} of the {out.numel()} outputs on the first {n} test inputs are "
                               "NaN or infinite; no metric means anything over them (check the weights and the input "
                               "scaling)")
    if getattr(wl.metric, "fn", None) is top1 and wl.metric is not AGREEMENT:
        _check_labels(wl, out, label)
    notes = []
    floats = sorted({str(t.dtype).replace("torch.", "") for s in (wl.test, wl.train, wl.calib) if s is not None
                     for t in (s.x.values() if I.is_dict(s.x) else [s.x]) if t.is_floating_point() and t.dtype != dtype})
    if floats:
        notes.append(f"inputs: the data is {' and '.join(floats)}; every forward casts it to "
                     f"{str(dtype).replace('torch.', '')}, the model's dtype")
    if isinstance(raw, (tuple, list)):
        notes.append(f"outputs: the model returns a {type(raw).__name__} of {len(raw)}; its first element "
                     f"{tuple(out.shape[1:])} per item is scored, the rest ignored")
    elif not isinstance(raw, torch.Tensor):
        notes.append(f"outputs: the model returns {type(raw).__name__}; its .logits {tuple(out.shape[1:])} per item "
                     "are scored")
    return tuple(notes)


def _check_labels(wl: Workload, out: torch.Tensor, label: str) -> None:
    """Top-1 metrics need one class index per output position (one per item; one per token for sequence outputs
    (B, T, classes)) inside the model's outputs: refuse anything else in one line. -100, the usual "ignore this
    position" target, is let through."""
    if out.dim() < 2:
        return
    classes, per_item = int(out.shape[-1]), tuple(out.shape[1:-1])
    for split in ("test", "train", "calib"):
        s = getattr(wl, split)
        if s is None or s.y is None:
            continue
        y = s.y
        if tuple(y.shape[1:]) != per_item:
            want = "one class index per item" if not per_item else f"targets of shape (N, {', '.join(map(str, per_item))})"
            raise CompressionError(f"model: {label}: {split} targets have shape {tuple(y.shape)} but the outputs "
                                   f"{(-1, *out.shape[1:])} need {want} for top-1 {wl.metric.name}; pass class "
                                   "indices (e.g. one_hot.argmax(-1))")
        if y.is_complex() or (y.is_floating_point() and not bool(torch.isfinite(y).all() and (y == y.round()).all())):
            raise CompressionError(f"model: {label}: {split} targets are {str(y.dtype).replace('torch.', '')} with "
                                   f"fractions but top-1 {wl.metric.name} needs class indices; pass integer labels")
        kept = y[y != -100]
        if not kept.numel():
            continue
        lo, hi = int(kept.min()), int(kept.max())
        if lo < 0 or hi >= classes:
            shift = " (they seem to start at 1: pass labels - 1)" if lo >= 1 and hi == classes else ""
            raise CompressionError(f"model: {label}: {split} labels run {lo}..{hi} but the model has {classes} "
                                   f"outputs (classes 0..{classes - 1}), so those items could never be scored "
                                   f"right; give labels 0..{classes - 1}{shift}")


def resolve_workload(ref: "str | Workload", base_dir: str | Path | None = None, cache: bool = True) -> Workload:
    """The workload a reference names: ``path/file.py:attr`` (relative to ``base_dir`` or the current directory),
    ``package.module:attr`` (a Workload or a zero-argument callable returning one) or a registered name.

    Registered workloads are built once per process and shared (techniques never modify their input)."""
    if isinstance(ref, Workload):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise CompressionError(f"model: expected a workload reference (name, file.py:attr or module:attr), got {ref!r}")
    ref = ref.strip()
    key = canonical_reference(ref, base_dir)
    with _LOCK:
        if cache and key in _CACHE:
            return _CACHE[key]
    if is_reference(ref):
        wl = _build(_load_attr(ref, base_dir), ref)
    else:
        reg = registered_workloads().get(ref)
        if reg is None:
            names = ", ".join(workload_names()) or "(none registered)"
            raise CompressionError(f"model: unknown {ref!r}; choose one of {names}, or give path/to/file.py:attr")
        wl = _build(reg.factory, ref)
    notes = _check_forward(wl, ref)
    if wl.reference != key or wl.notes != notes:
        wl = _with(wl, reference=key, notes=notes)
    with _LOCK:
        if cache:
            _CACHE[key] = wl
    return wl


def _with(wl: Workload, **changes: Any) -> Workload:
    """A copy of ``wl`` with fields changed, without re-validating (the splits are already converted)."""
    new = copy.copy(wl)
    for k, v in changes.items():
        object.__setattr__(new, k, v)
    return new


def workload_summary(ref: str) -> dict:
    """Cheap facts for a listing: a registered workload's ``info`` without building it; a reference is built."""
    reg = registered_workloads().get(ref)
    if reg is not None and reg.info:
        return {"name": ref, **reg.info}
    wl = resolve_workload(ref)
    out = {"name": wl.name, "reference": wl.reference, "task": wl.description,
           "architecture": type(wl.model).__name__, "metric": wl.metric_name, "percent": wl.metric.percent,
           "notes": list(wl.notes), **wl.info}
    if out.get("baseline_metric") is None:  # measured here: a listing never shows "-" for a model it could load
        out["baseline_metric"] = wl.score(wl.model)
    return out


__all__ = [
    "ACCURACY", "AGREEMENT", "DataSplits", "as_workload", "Metric", "Registered", "Split", "Workload", "better",
    "canonical_reference", "is_reference", "loss_unit", "metric_loss", "metric_up", "register_workload",
    "registered_workloads", "reinitialized", "resolve_workload", "top1",
    "workload_names", "workload_summary",
]
