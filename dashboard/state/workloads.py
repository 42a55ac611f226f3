"""The workloads on offer and what the pages say about them: the library's registered names plus the command line's
``--workload REF`` (each loaded once per process, never mutated), their facts, metric wording, one-line errors and
the machine's CPU facts."""

from __future__ import annotations

import streamlit as st

from compression_core import CompressionError, predict
from compression_core import inputs as I
from compression_core.cpu import CpuFacts, cpu_facts
from compression_core.recipe import validation_error_line
from compression_core.workload import Workload, metric_up, registered_workloads, resolve_workload, workload_names

try:  # the one validator of browser input (dashboard/trust.py), with this folder on sys.path or as a package
    import trust
except ModuleNotFoundError:  # pragma: no cover
    from dashboard import trust

DEFAULT_MODEL = "digits-cnn"


def cli_references(argv: list[str] | None = None) -> list[str]:
    """The ``--workload REF`` arguments given after ``--`` on the ``streamlit run`` command line, in order."""
    return trust.cli_references(argv)


def _load(ref: str) -> tuple[Workload | None, str | None]:
    """(workload, None) or (None, one-line error). Every model a page loads comes through here: a reference the
    server does not list (``trust.check_model_reference``) is refused before anything is imported or called."""
    try:
        ref = trust.check_model_reference(ref)
    except trust.Refused as e:
        return None, one_line(e)
    return _load_listed(ref)


@st.cache_resource(show_spinner=False)
def _load_listed(ref: str) -> tuple[Workload | None, str | None]:
    """(workload, None) or (None, one-line error), once per process: a bad reference is not retried each rerun."""
    try:
        return resolve_workload(ref), None
    except Exception as e:  # CompressionError from the library; anything else in one line
        return None, one_line(e)


def models() -> list[str]:
    """Every model a page lists, by reference: the registered names, then the command line's workloads."""
    refs = list(workload_names())
    for ref in cli_references():
        wl, _ = _load(ref)
        if wl is not None and (wl.reference or ref) not in refs:
            refs.append(wl.reference or ref)
    return refs


def reference_errors() -> list[str]:
    """One line per command-line reference that cannot be loaded."""
    out = []
    for ref in cli_references():
        _, err = _load(ref)
        if err:
            out.append(f"--workload {ref}: {err}")
    return out


def baseline(ref: str) -> Workload:
    """The workload ``ref`` (loaded once per process and shared by every session: never mutate it)."""
    wl, err = _load(ref)
    if wl is None:
        raise CompressionError(err or f"model: cannot load {ref!r}")
    return wl


def label(ref: str) -> str:
    """What a model list shows: the registered name, or the workload's name and where it comes from."""
    if ref in registered_workloads():
        return ref
    wl, _ = _load(ref)
    name = wl.name if wl is not None else ref
    src = ref.rsplit("/", 1)[-1]
    return f"{name} ({src})" if src != name else name


def default_index(refs: list[str], preferred: str = DEFAULT_MODEL) -> int:
    return refs.index(preferred) if preferred in refs else 0


@st.cache_data(show_spinner=False)
def facts(ref: str) -> dict:
    """What the pages say about a model, from the workload (``info`` where present, else derived from the model):
    name, architecture, task, classifier, metric, class names and whether predictions are classes (a language
    model: no classes, its vocabulary size in ``vocab_size``)."""
    wl = baseline(ref)
    reg = registered_workloads().get(ref)
    info = {**(dict(reg.info) if reg is not None else {}), **dict(wl.info)}
    out = predict(wl.model, I.take(wl.test.x, slice(0, 1)))  # (1, outputs)
    n_out = int(out.shape[-1]) if out.dim() >= 2 else 1
    y = wl.test.y
    # a language model scores its whole vocabulary at every position: tokens are not classes (no 1,024-entry class
    # list, confusion matrix or per-class chart for a perplexity workload)
    language = (out.dim() == 3 and y is not None and y.dim() == 2 and not y.is_floating_point()
                and not info.get("class_names"))
    num_classes = 0 if language else int(info.get("num_classes") or n_out)
    names = info.get("class_names")
    class_names = [str(c) for c in names] if names and len(names) == num_classes else [str(i) for i in range(num_classes)]
    classification = (out.dim() == 2 and y is not None and y.dim() == 1 and not y.is_floating_point()
                      and int(y.min()) >= 0 and int(y.max()) < num_classes)
    return {
        "name": wl.name, "reference": wl.reference or ref,
        "architecture": str(info.get("architecture") or type(wl.model).__name__),
        "task": str(info.get("task") or wl.description or ""),
        "classifier": wl.output_layer, "metric": wl.metric_name, "percent": bool(wl.metric.percent),
        "higher_is_better": metric_up(wl.metric),
        "num_classes": num_classes, "class_names": class_names, "classification": bool(classification),
        "language_model": bool(language), "vocab_size": n_out if language else 0,
        "test_items": len(wl.test), "tensor_input": not I.is_dict(wl.test.x),
    }


def tensor_input(ref: str) -> bool:
    """True when the model takes one tensor (not a dict of tensors), read from the listing where it says so
    (without loading the model), else from the loaded workload."""
    reg = registered_workloads().get(ref)
    if reg is not None and "input_shape" in reg.info:
        return reg.info["input_shape"] is not None
    return facts(ref)["tensor_input"]


def metric_text(value: float, f: dict) -> str:
    """A metric value as a person reads it: ``97.78 %`` for fractions, ``0.8123`` otherwise."""
    return f"{value * 100:.2f} %" if f["percent"] else f"{value:.4f}"


def metric_delta(after: float, before: float, f: dict) -> str:
    """The change in the metric's own units: ``-1.20 points`` for fractions, ``+0.8123 (+4.1 %)`` otherwise (the
    relative change is what a perplexity budget counts)."""
    if f["percent"]:
        return f"{(after - before) * 100:+.2f} points"
    rel = f" ({(after - before) / abs(before) * 100:+.1f} %)" if before else ""
    return f"{after - before:+.4f}{rel}"


def delta_color(f: dict) -> str:
    """``st.metric``'s delta_color for the metric: "inverse" when lower is better (a rise in perplexity is red)."""
    return "normal" if f.get("higher_is_better", True) else "inverse"


def metric_axis(f: dict) -> str:
    """An axis title naming the metric and its unit, and its direction when lower is better."""
    return f"{f['metric']}" + (" (%)" if f["percent"] else "") + \
        ("" if f.get("higher_is_better", True) else ", lower is better")


def metric_title(f: dict) -> str:
    """``Accuracy`` (the metrics' label the tests and the load benchmark read), or the workload's metric name."""
    return "Accuracy" if f["metric"] == "accuracy" else f["metric"].capitalize()


def item_name(ref: str) -> str:
    """What a test item is called on the page: the workload's ``info["item_name"]``, "sentences" for token ids."""
    wl = baseline(ref)
    name = (wl.info or {}).get("item_name")
    if name:
        return str(name)
    x = wl.test.x
    text = (I.is_dict(x) and "input_ids" in x) or (not I.is_dict(x) and not x.is_floating_point())
    return "sentences" if text else "items"


def one_line(exc: BaseException) -> str:
    """A single line for ``st.error``: CompressionError as is, pydantic's first error as ``field: problem``."""
    from pydantic import ValidationError

    if isinstance(exc, CompressionError):
        return " ".join(str(exc).split())
    if isinstance(exc, ValidationError):
        try:
            return validation_error_line(exc)
        except Exception:
            errs = exc.errors()
            if errs:
                e = errs[0]
                loc = ".".join(str(p) for p in e.get("loc", ())) or "recipe"
                return f"{loc}: {e.get('msg', 'invalid')}"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"unexpected {type(exc).__name__}: {text[:300]}"


def cpu() -> CpuFacts:
    """This machine's CPU facts (detected once per process by the library): every page's CPU sentence."""
    return cpu_facts()
