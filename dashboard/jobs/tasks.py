"""The job kinds: functions a worker calls as ``fn(payload, progress) -> picklable result`` (``apply_recipe``,
``sensitivity``, ``fit_budget``, ``search``, ``advise``, latency, ``faster_path``, and two diagnostics), and ``recipe_result``, which
rebuilds a finished recipe job's model in the server from its bundle.

Imports neither streamlit nor torch at import time (each function imports what it needs, in the worker).
"""

from __future__ import annotations

import os
import time

from .worker import _one_line  # the worker's own one-line form of an exception

# kind -> "module:function"; the function is called in a worker as fn(payload, progress) -> picklable result.
KINDS: dict[str, str] = {
    "recipe": f"{__name__}:run_recipe",  # training steps: finetune, QAT, distillation, lottery tickets, ...
    "sensitivity": f"{__name__}:run_sensitivity",
    "fit": f"{__name__}:run_fit",
    "search": f"{__name__}:run_search",
    "advise": f"{__name__}:run_advise",
    "latency": f"{__name__}:run_latency",
    "faster": f"{__name__}:run_faster",  # the compressed model against fp32 and the other engines (slower? what is faster)
    "sleep": f"{__name__}:run_sleep",  # diagnostics: check the limits and the queue on a server
    "allocate": f"{__name__}:run_allocate",
    "export": f"{__name__}:run_export",  # a compressed model's bundle and ONNX file (take it home)
    "measure_bundle": f"{__name__}:run_measure_bundle",  # an uploaded bundle re-measured (a heavy one)
    "curves": f"{__name__}:run_curves",  # per-layer sensitivity curves of one family, or their band (Explore's estimate)
}


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def _sweep_workers() -> int:
    """Evaluation threads for a sensitivity sweep in this worker: the machine's cores shared by the pool's workers
    (2 on a 2-core server with its one worker: the page server's core is idle between reruns, and workers run at a
    lower priority than the page). A sweep's points do not depend on it (``compression_core.sensitivity``)."""
    pool = max(1, int(os.environ.get("COMPRESSION_LAB_POOL_WORKERS", "1") or 1))
    return max(1, min(4, (os.cpu_count() or 1) // pool))


def run_recipe(payload: dict, progress) -> dict:
    """Apply a recipe (any steps, training included) and return its measured numbers and the model as a bundle."""
    _threads()
    from compression_core.bundle import bundle_bytes
    from compression_core.recipe import apply_recipe, load_recipe

    recipe = load_recipe(payload["recipe"])
    t0 = time.perf_counter()
    r = apply_recipe(recipe, progress=progress, with_latency=False, measure_before=False)
    seconds = time.perf_counter() - t0
    return {"recipe": payload["recipe"], "after": r.after.model_dump() if r.after is not None else None,
            "steps": [s.to_json_dict() for s in r.steps], "seconds": seconds,
            "bundle": bundle_bytes(r.recipe, r.model)}


def recipe_result(result: dict):
    """The ``compression_core.recipe.RecipeResult`` of a finished ``recipe`` job, its model rebuilt in this process
    from the bundle (structure replayed, stored weights loaded: nothing trains)."""
    import tempfile

    from compression_core import ModelStats
    from compression_core.bundle import load_bundle
    from compression_core.recipe import RecipeResult, StepReport, load_recipe

    fd, path = tempfile.mkstemp(suffix=".bundle.pt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(result["bundle"])
        _, model = load_bundle(path)
    finally:
        os.unlink(path)
    after = ModelStats.model_validate(result["after"]) if result.get("after") is not None else None
    steps = [StepReport(s["index"], s["kind"], list(s["touched"]), s["seconds"], s.get("notes", ""))
             for s in result.get("steps", [])]
    return RecipeResult(load_recipe(result["recipe"]), model, None, after, steps)


def run_sensitivity(payload: dict, progress) -> dict:
    """``compression_core.sensitivity`` of a workload reference: {model, technique, include_classifier, levels},
    read from the disk cache when the same sweep of the same model was computed before (``sensitivity_cache``),
    else computed and stored; the result says which (``cached``)."""
    _threads()
    from compression_core import resolve_workload
    from compression_core.sensitivity_cache import cached_sensitivity

    wl = resolve_workload(payload["model"])
    kw = {k: payload[k] for k in ("levels", "include_classifier", "heads") if k in payload}
    progress(0.0, "loading the model and looking for a stored result")
    res, hit = cached_sensitivity(wl.model, wl, payload.get("technique", "prune"), name=wl.name, progress=progress,
                                  workers=_sweep_workers(), **kw)
    return {**res.to_json_dict(), "cached": hit}


def run_fit(payload: dict, progress) -> dict:
    """``fit_budget`` of a workload reference to ``payload['spec']``; the fit and its explicit recipe (YAML)."""
    _threads()
    from compression_core import resolve_workload
    from compression_core.budget import fit_budget, fitted_recipe
    from compression_core.recipe import recipe_to_yaml

    wl = resolve_workload(payload["model"])
    progress(0.1, "fitting")
    f = fit_budget(wl.model, wl, payload["spec"])
    return {"fit": f.model_dump(), "recipe": recipe_to_yaml(fitted_recipe(payload["model"], f))}


def run_search(payload: dict, progress) -> dict:
    """``compression_core.search.search`` run locally in the worker: {model, trials, ...search keywords}."""
    _threads()
    from compression_core.search import search

    kw = dict(payload)
    model = kw.pop("model")
    kw["executor"] = "local"  # one worker = one core; a Ray cluster is the CLI's business
    return search(model, progress=progress, **kw).to_json_dict()


def run_advise(payload: dict, progress) -> dict:
    _threads()
    from compression_core.advise import advise

    progress(0.05, "quantizing and measuring each candidate")
    return advise(payload["model"], max_drop_pt=float(payload.get("max_drop", 1.0))).to_json_dict()


def run_latency(payload: dict, progress) -> dict:
    """Baseline vs compressed latency timed together, interleaved, in each runtime of ``payload['runtimes']``
    ("torch", "ONNX Runtime"; default torch): {model, recipe, bundle (from a recipe job or ``bundle_bytes``; else the
    recipe is applied here), batch, threads, rounds, runtimes}. Explore's "Time before vs after" runs it, so the
    timing never takes the page server's CPU. Returns {"timings": [the comparison's JSON dict + its "runtime"],
    "errors": [{"runtime", "error"}]}: a runtime that cannot run the model (one ONNX cannot export) is one line in
    ``errors``, the other runtimes are still timed."""
    _threads()
    from compression_core import inputs as I
    from compression_core import resolve_workload
    from compression_core.errors import CompressionError
    from compression_core.timing import compare_latency

    wl = resolve_workload(payload["model"])
    progress(0.05, "rebuilding the compressed model")
    if payload.get("bundle"):
        after = recipe_result({"recipe": payload["recipe"], "bundle": payload["bundle"]}).model
    else:
        from compression_core.recipe import apply_recipe

        after = apply_recipe(payload["recipe"], with_latency=False, measure_before=False, measure_after=False,
                             workload=wl).model
    batch, threads = int(payload.get("batch", 1)), int(payload.get("threads", 1))
    rounds = int(payload.get("rounds", 15))
    example = I.head(wl.test.x, batch)
    runtimes = list(payload.get("runtimes") or ["torch"])
    out: dict = {"timings": [], "errors": []}
    for i, rt in enumerate(runtimes):
        progress(0.2 + 0.8 * i / len(runtimes), f"timing before and after in {rt}, alternately")
        try:
            if rt == "torch":
                c = compare_latency(wl.model, after, example, threads=threads, rounds=rounds)
            elif rt == "ONNX Runtime":
                c = _ort_comparison(wl, after, example, threads, rounds)
            else:
                raise CompressionError(f"runtime {rt!r} is unknown; known: torch, ONNX Runtime")
        except Exception as e:  # a model ONNX cannot export, onnxruntime missing: one line, the others still run
            out["errors"].append({"runtime": rt, "error": _one_line(e)})
            continue
        out["timings"].append({**c.to_json_dict(), "runtime": rt})
    return out


def _ort_comparison(wl, after, example, threads: int, rounds: int):
    """Baseline and ``after`` exported to ONNX (``to_onnx`` on the first two test items) and their ONNX Runtime
    sessions timed together, interleaved (``compare_calls``), on the same batch fed by the library's ``feed``."""
    from compression_core import inputs as I
    from compression_core.onnx_export import to_onnx
    from compression_core.ort import feed, session
    from compression_core.timing import compare_calls

    sample = I.take(wl.test.x, slice(0, 2))
    sb, sa = session(to_onnx(wl.model, sample), threads=threads), session(to_onnx(after, sample), threads=threads)
    fb, fa = feed(sb, example), feed(sa, example)
    return compare_calls(lambda: sb.run(None, fb), lambda: sa.run(None, fa), rounds=rounds, runtime="onnxruntime",
                         batch_size=I.n_items(example), threads=threads)


def run_faster(payload: dict, progress) -> dict:
    """``compression_core.faster.faster_path``: the compressed model of ``payload['recipe']`` (rebuilt from
    ``payload['bundle']`` when given, else applied here) against the fp32 model and the other compressed engines,
    timed together: {model, recipe, bundle, batch, threads}. The result as plain data, with its ``line``."""
    _threads()
    from compression_core import resolve_workload
    from compression_core.faster import faster_path
    from compression_core.recipe import load_recipe

    wl = resolve_workload(payload["model"])
    recipe = load_recipe(payload["recipe"])
    model = recipe
    if payload.get("bundle"):
        progress(0.02, "rebuilding the compressed model")
        model = recipe_result({"recipe": payload["recipe"], "bundle": payload["bundle"]}).model
    return faster_path(wl, model, recipe=recipe, label=payload.get("label"), batch_size=int(payload.get("batch", 1)),
                       threads=int(payload.get("threads", 1)), progress=progress).to_json_dict()


def run_export(payload: dict, progress) -> dict:
    """The compressed model of ``payload['recipe']`` (rebuilt from ``payload['bundle']`` when given, else applied
    here as ``apply`` does) as the .onnx bytes ONNX Runtime deploys (``compression_core.ort.deploy_onnx``) and, with
    ``bundle_too``, its bundle. An ONNX refusal is one line in ``onnx_error`` (the bundle still comes back)."""
    _threads()
    from compression_core import resolve_workload
    from compression_core.bundle import bundle_bytes, load_bundle
    from compression_core.errors import CompressionError
    from compression_core.ort import deploy_onnx
    from compression_core.recipe import apply_recipe, load_recipe

    recipe = load_recipe(payload["recipe"])
    wl = resolve_workload(recipe.model)
    if payload.get("bundle"):
        progress(0.1, "rebuilding the compressed model from its bundle")
        _, model = load_bundle(payload["bundle"], workload=wl)
    else:
        progress(0.05, "applying the recipe")
        model = apply_recipe(recipe, progress=lambda f, m: progress(0.05 + 0.5 * f, m), with_latency=False,
                             measure_before=False, measure_after=False, workload=wl).model
    out: dict = {"bundle": bundle_bytes(recipe, model) if payload.get("bundle_too") else None, "onnx": None,
                 "onnx_error": None}
    progress(0.6, "exporting to ONNX (the deploy engine's graph)")
    try:
        out["onnx"] = deploy_onnx(model, wl)
    except CompressionError as e:
        out["onnx_error"] = " ".join(str(e).split())
    return out


def run_measure_bundle(payload: dict, progress) -> dict:
    """An uploaded bundle (``payload['bundle']``, already read and its model checked by the server) rebuilt over the
    listed workload ``payload['model']`` and measured on the whole test split: {stats}."""
    _threads()
    from compression_core import measure, resolve_workload
    from compression_core.bundle import load_bundle

    wl = resolve_workload(payload["model"])
    progress(0.1, "rebuilding the bundle's model")
    recipe, model = load_bundle(payload["bundle"], workload=wl)
    progress(0.4, "measuring it on the test split")
    stats = measure(model, wl, name=recipe.name or f"{wl.name} (bundle)", with_latency=False)
    return {"stats": stats.model_dump()}


def run_curves(payload: dict, progress) -> dict:
    """``compression_core.metric_curves`` of one family (``family``, ``levels``, optionally only ``layers``) of a
    workload reference, or with
    ``band`` (n) the band of the given ``curves`` measured on n random configurations: {"curves": MetricCurves}."""
    _threads()
    from compression_core import resolve_workload
    from compression_core.estimate_metric import MetricCurves, measure_band, metric_curves

    wl = resolve_workload(payload["model"])
    if payload.get("band"):
        progress(0.05, f"checking the estimate on {int(payload['band'])} random configurations")
        c = measure_band(wl.model, wl, MetricCurves.model_validate(payload["curves"]), int(payload["band"]))
    else:
        fam = payload["family"]
        levels = {fam: tuple(payload["levels"])} if payload.get("levels") else None
        c = metric_curves(wl.model, wl, [fam], levels=levels, check=0, progress=progress,
                          targets=payload.get("layers"), workers=_sweep_workers())
    return {"curves": c.model_dump(mode="json")}


def run_sleep(payload: dict, progress) -> dict:
    """Diagnostics: sleep ``seconds`` in steps, reporting progress (checks queue, cancel and the time limit)."""
    seconds = float(payload.get("seconds", 1.0))
    steps = max(1, int(seconds / 0.05))
    for i in range(steps):
        time.sleep(seconds / steps)
        progress((i + 1) / steps, f"slept {(i + 1) * seconds / steps:.2f} s")
    return {"slept": seconds, "pid": os.getpid()}


def run_allocate(payload: dict, progress) -> dict:
    """Diagnostics: allocate ``mb`` megabytes and touch them (checks the memory limit)."""
    mb = int(payload.get("mb", 10))
    blocks = []
    for i in range(mb):
        blocks.append(b"\x01" * 2**20)  # written, so every page is really resident
        if i % 64 == 0:
            progress(i / max(mb, 1), f"allocated {i} MB")
    return {"allocated_mb": len(blocks), "pid": os.getpid()}
