"""Take the compressed model home, and open one someone made: the bundle and ONNX downloads the Explore, Recipe,
Search and Class pages offer, and the Recipe page's bundle opener.

- **Bundle**: the library's own file (``compression_core.bundle``: the recipe + the shippable weights, loaded with
  ``torch.load(weights_only=True)``), loadable by ``python -m compression_core measure --bundle FILE``. Its recipe
  carries a ``name`` (the file's) and a ``description`` with the numbers this dashboard measured, so an opened bundle
  is re-measured beside what it recorded. A light model's bundle is built in the page when the button is clicked
  (``st.download_button(data=callable)``: a ``torch.save`` of weights already in memory, milliseconds); a heavy one
  (or one whose training steps are not in this process) comes from a job.
- **ONNX**: the deploy engine's file (``compression_core.ort.deploy_onnx``: QDQ for static int8/QAT, ORT dynamic
  int8, MatMulNBits for int4, the float export otherwise), always built in a job (``torch.onnx.export`` takes
  seconds of the server's CPU even for the small samples).
- **Opening a bundle**: its recorded model reference is read without resolving anything (``read_bundle(...,
  any_model=True)``) and checked by ``trust.check_model_reference`` / ``trust.check_recipe`` BEFORE the workload is
  loaded; then ``load_bundle`` rebuilds it over the listed workload (weights only) and ``measure`` re-measures it.

Nothing is written to the server's disk: bundles and ONNX files are bytes in memory.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Any, Callable

import streamlit as st

import jobs
import state
import store
import techniques as T
import trust
from compression_core import CompressionError
from compression_core.bundle import MAX_BUNDLE_BYTES, bundle_bytes, load_bundle, read_bundle
from compression_core.recipe import parse_recipe, recipe_to_dict

HEAVY_BYTES = 16 * 2**20  # a baseline file above this: the bundle comes from a job too (MiniLM: ~90 MB)
MEASURE_IN_PAGE_BYTES = 4 * 2**20  # an uploaded bundle above this is re-measured in a job
BUNDLE_UPLOAD_MB = MAX_BUNDLE_BYTES // 2**20  # the library's own limit on a bundle; server.maxUploadSize matches
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MEASURED = re.compile(r"measured by the Compression Lab dashboard on the test split: (?P<metric>[A-Za-z0-9_ -]{1,40}) "
                       r"= (?P<value>[-+0-9.eE]+), size_bytes = (?P<size>\d+)")
MIME = "application/octet-stream"


# ------------------------------------------------------------------------------------------------ names
def safe_name(text: str, limit: int = 120) -> str:
    """``text`` with only letters, digits, ``.``, ``_`` and ``-`` (runs of anything else become one ``-``)."""
    out = _SAFE.sub("-", str(text)).strip("-.") or "model"
    return out[:limit].rstrip("-.") or "model"


def _pct(v: Any) -> str:
    return f"{round(float(v) * 100):d}" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""


def step_tag(step: dict) -> str:
    """A short name for one recipe step, from what the technique declares (family, storage, whether it trains) and
    its settings: ``prune50``, ``structured30``, ``int8``, ``int4``, ``fp16``, ``fake4``, ``shrink``, ``finetune``."""
    kind = str(step.get("kind", "step"))
    t = T.by_kind(kind)
    if t is None:
        return kind
    fam, storage = t.ui.family, t.ui.storage
    defaults = {n: f.get_default(call_default_factory=True) for n, f in t.fields().items()}
    step = {**defaults, **step}  # a setting left at its default is not in the page's step
    suffix = kind[len(fam) + 1:] if kind.startswith(fam + "_") else kind
    if t.ui.trains:
        return suffix
    if storage in ("int8", "int4"):
        bits = step.get("bits")
        tag = f"int{bits}" if isinstance(bits, int) else storage
        wb = step.get("weight_bits")
        return tag + (f"w{wb}" if isinstance(wb, int) and wb < 8 else "")
    if storage == "fp16":
        return {"bfloat16": "bf16", "float16": "fp16"}.get(str(step.get("dtype")), "fp16")
    if storage == "simulated":
        return f"fake{step.get('bits', '')}"
    amount = step.get("amount", step.get("rank_ratio"))
    ovr = step.get("overrides") or {}
    if not amount and ovr and all(isinstance(v, (int, float)) for v in ovr.values()):  # per-layer values
        same = len(set(ovr.values())) == 1  # one value for every layer: as uniform as the main setting
        return ("prune" if storage == "sparse" else suffix) + _pct(sum(ovr.values()) / len(ovr)) + \
            ("" if same else "mix")
    if storage == "sparse" and "amount" in step:
        return "prune" + _pct(amount)
    return suffix + _pct(amount)


def file_stem(recipe: dict, name: str | None = None) -> str:
    """The download's name: the model's name and one tag per step, safe characters only
    (``digits-cnn-prune50-int8``); ``-baseline`` for a recipe with no steps."""
    model = name or recipe.get("model", "model")
    if "/" in str(model) or ":" in str(model):  # a file or module reference: its attribute or file name
        model = re.split(r"[/:]", str(model).rstrip("/"))[-1].removesuffix(".py")
    tags: list[str] = []
    for s in recipe.get("steps", []):
        tag = step_tag(s)
        if tag and tag not in tags:
            tags.append(tag)
    return safe_name("-".join([safe_name(model, 60)] + (tags or ["baseline"])))


# ------------------------------------------------------------------------------------------------ recorded numbers
def measured_note(stats: dict | None, f: dict) -> str | None:
    """The sentence a bundle's recipe ``description`` records (None when there are no full-test-set numbers)."""
    if not stats or stats.get("accuracy") is None or stats.get("size_bytes") is None:
        return None
    return (f"measured by the Compression Lab dashboard on the test split: {f['metric']} = "
            f"{float(stats['accuracy'])!r}, size_bytes = {int(stats['size_bytes'])}")


def recorded(description: str | None) -> dict | None:
    """What a bundle's recipe recorded about its numbers ({metric, accuracy, size_bytes}), None if nothing."""
    m = _MEASURED.search(description or "")
    if m is None:
        return None
    try:
        return {"metric": m.group("metric"), "accuracy": float(m.group("value")), "size_bytes": int(m.group("size"))}
    except ValueError:
        return None


def named_recipe(recipe: dict, stats: dict | None = None) -> dict:
    """``recipe`` with the download's ``name`` and (with full-test-set numbers) the ``description`` recording them."""
    f = state.facts(recipe["model"])
    out = {**recipe, "name": file_stem(recipe, f["name"])}
    note = measured_note(stats, f)
    if note:
        out["description"] = note
    else:
        out.pop("description", None)
    return out


# ------------------------------------------------------------------------------------------------ building
def trains(recipe: dict) -> bool:
    return any((t := T.by_kind(s.get("kind"))) is not None and t.ui.trains for s in recipe.get("steps", []))


def heavy(recipe: dict) -> bool:
    """True when the model is too big to serialise in the page (its baseline file is over ``HEAVY_BYTES``)."""
    return state.baseline_view(recipe["model"])["stats"]["size_bytes"] > HEAVY_BYTES


def bundle_of(recipe: dict, stats: dict | None = None) -> bytes:
    """The bundle of ``recipe``'s compressed model as this process holds it (applied if it is not cached: only
    for recipes that do not train), with its name and recorded numbers. No Streamlit calls (a download thread)."""
    key = state.recipe_key(recipe)
    model = state.applied(key)[0].model
    if stats is None:  # a light model (in-page bundles only): its numbers measured as the pages measure them
        try:
            stats = state.result_view(key)["stats"]
        except Exception:  # the bundle is still the model; it just records no numbers
            stats = None
    return bundle_bytes(parse_recipe(named_recipe(recipe, stats)), model)


def export_payload(recipe: dict, stats: dict | None, want_bundle: bool) -> dict:
    """The ``export`` job's payload: the named recipe, plus the bundle when its model was trained here (a worker
    would otherwise train it again); without one the worker applies the recipe (deterministic, as ``apply``)."""
    payload: dict = {"recipe": named_recipe(recipe, stats), "bundle_too": bool(want_bundle)}
    if trains(recipe) and state.is_applied(state.recipe_key(recipe)) and not heavy(recipe):
        payload["bundle"] = bundle_of(recipe, stats)
    return payload


# ------------------------------------------------------------------------------------------------ the page's panel
def offer(recipe: dict | None, key: str, stats: dict | None = None, title: str | None = "Take it home") -> None:
    """Download buttons for ``recipe``'s compressed model: the bundle and the ONNX file, named after the model and
    recipe. ``stats``: the page's full-test-set numbers of it (recorded in the bundle; None for a preview). ``key``:
    the widgets' key prefix, never ``x_...`` (app.py re-assigns those keys on every run, which a button refuses)."""
    if title:
        st.subheader(title)
    if not recipe or not recipe.get("steps"):
        st.caption("Compress the model first: the downloads are the compressed model.")
        return
    try:
        f = state.facts(recipe["model"])
        stem = file_stem(recipe, f["name"])
        is_heavy = heavy(recipe)
        rkey = state.recipe_key(recipe)
        in_page = not is_heavy and (not trains(recipe) or state.is_applied(rkey))
    except Exception as e:  # a model this server cannot load: one line
        st.error(state.one_line(e))
        return
    st.caption(f"**{stem}.bundle**: the recipe and the weights, the library's own file (weights only; opens with "
               f"`python -m compression_core measure --bundle {stem}.bundle` or on the Recipe page). "
               f"**{stem}.onnx**: the file ONNX Runtime runs (quantized layers as the deploy engine's int8/int4 "
               "graph), built in a background job.")
    c1, c2 = st.columns(2)
    if in_page:
        c1.download_button("Download the bundle", data=lambda: bundle_of(recipe, stats), file_name=f"{stem}.bundle",
                           mime=MIME, key=f"{key}_bundle", icon=":material/download:", on_click="ignore",
                           width="stretch", help=f"{stem}.bundle, built when you click")
    try:
        payload = export_payload(recipe, stats, want_bundle=not in_page)
    except Exception as e:
        st.error(state.one_line(e))
        return
    digest = hashlib.sha256(state.recipe_key(payload["recipe"]).encode()).hexdigest()[:16]
    with c2 if in_page else c1:
        result = jobs.job_panel("export", payload, f"export:{digest}", store.browser_id(),
                                label="Build the ONNX file" if in_page else "Build the bundle and the ONNX file")
    if result is None:
        return
    if result.get("bundle") is not None:
        c1.download_button("Download the bundle", data=result["bundle"], file_name=f"{stem}.bundle", mime=MIME,
                           key=f"{key}_bundle_job", icon=":material/download:", on_click="ignore", width="stretch",
                           help=f"{stem}.bundle, {len(result['bundle']) / 1024:,.1f} KB")
    if result.get("onnx") is not None:
        c2.download_button("Download the ONNX file", data=result["onnx"], file_name=f"{stem}.onnx", mime=MIME,
                           key=f"{key}_onnx", icon=":material/download:", on_click="ignore", width="stretch",
                           help=f"{stem}.onnx, {len(result['onnx']) / 1024:,.1f} KB")
    elif result.get("onnx_error"):
        st.error(f"ONNX: {result['onnx_error']}")


# ------------------------------------------------------------------------------------------------ opening one
def inspect_bundle(raw: bytes) -> tuple[str, dict, dict | None]:
    """(listed model reference, recipe as data, recorded numbers) of an uploaded bundle, read weights-only and
    checked BEFORE anything is resolved: the recorded reference must be one this server lists (``trust``)."""
    if len(raw) > MAX_BUNDLE_BYTES:
        raise CompressionError(f"bundle: the file is {len(raw) / 2**20:,.1f} MB; a bundle may be at most "
                               f"{BUNDLE_UPLOAD_MB} MB")
    recipe, _ = read_bundle(io.BytesIO(raw), any_model=True)  # tensors and strings only; nothing resolved
    ref = trust.check_model_reference(recipe.model)
    data = recipe_to_dict(recipe)
    data["model"] = ref
    checked = trust.check_recipe(data)  # the steps validated, the model checked again: one line on any problem
    return ref, checked, recorded(recipe.description)


def remeasure(raw: bytes, ref: str) -> dict:
    """The uploaded bundle rebuilt over the listed workload (its weights loaded with strict=True) and measured on
    the whole test split: ModelStats as a dict."""
    from compression_core import measure

    wl = state.baseline(ref)
    recipe, model = load_bundle(io.BytesIO(raw), workload=wl)
    return measure(model, wl, name=recipe.name or f"{wl.name} (bundle)", with_latency=False).model_dump()


def open_bundle(key: str = "r_bundle") -> None:
    """The bundle opener: an uploader (its real size limit in the label), the checks, the re-measured numbers
    beside what the bundle recorded. Every problem is one line, shown only for the file now chosen."""
    st.subheader("Open a bundle and re-measure it")
    up = st.file_uploader(f"Bundle file (.bundle from a download here or `apply --save-model`; at most "
                          f"{BUNDLE_UPLOAD_MB} MB)", key=key, max_upload_size=BUNDLE_UPLOAD_MB)
    if up is None:
        st.caption("The bundle's model must be one this server lists; its weights are loaded as plain tensors "
                   "(no code in the file is run) and measured again on the test split.")
        return
    try:
        raw = up.getvalue()
        ref, recipe, was = inspect_bundle(raw)
        f = state.facts(ref)
        digest = hashlib.sha256(raw).hexdigest()
        views = st.session_state.setdefault("_bundle_views", {})
        now = views.get(digest)
        if now is None and len(raw) <= MEASURE_IN_PAGE_BYTES:
            with st.spinner("rebuilding the bundle's model and measuring it on the test split..."):
                now = remeasure(raw, ref)
        elif now is None:
            result = jobs.job_panel("measure_bundle", {"model": ref, "bundle": raw}, f"bundle:{digest}",
                                    store.browser_id(), label="Re-measure it (a background job)")
            now = result["stats"] if result else None
        if now is None:
            return
        views[digest] = now
        while len(views) > 4:
            views.pop(next(iter(views)))
    except Exception as e:  # Refused, CompressionError, pydantic: one line, for this file only
        st.error(state.one_line(e))
        return
    st.success(f"Opened {up.name}: {state.label(ref)}, {state.describe(recipe['steps'])}; re-measured here: "
               f"{f['metric']} {state.metric_text(now['accuracy'], f)}, size {now['size_bytes']:,} bytes.")
    rows = [{"": "re-measured here", f["metric"]: state.metric_text(now["accuracy"], f),
             "size (bytes)": f"{now['size_bytes']:,}", "non-zero parameters": f"{now['nonzero_params']:,}"}]
    if was is not None:
        rows.append({"": "recorded in the bundle", f["metric"]: state.metric_text(was["accuracy"], f),
                     "size (bytes)": f"{was['size_bytes']:,}", "non-zero parameters": "-"})
    st.table(rows)
    if was is None:
        st.caption("This bundle recorded no measured numbers (a bundle from `apply --save-model` holds the recipe "
                   "and the weights only).")
    elif abs(was["accuracy"] - now["accuracy"]) > 1e-6 or was["size_bytes"] != now["size_bytes"]:
        st.warning("The numbers differ from what the bundle recorded: it was measured on another test split or "
                   "another version of the model.")
    else:
        st.caption("Same numbers as the bundle recorded.")


__all__ = ["BUNDLE_UPLOAD_MB", "HEAVY_BYTES", "bundle_of", "export_payload", "file_stem", "inspect_bundle",
           "measured_note", "named_recipe", "offer", "open_bundle", "recorded", "remeasure", "safe_name", "step_tag"]
