"""``python -m compression_core`` (installed as ``compression-lab``): list, measure, compress and export models, and
start the installed dashboard (``compression-lab dashboard``).

Every ``--model`` takes a workload reference: a registered name (the samples), ``path/to/file.py:attr`` or
``package.module:attr`` (a Workload or a zero-argument callable returning one).

Bad input prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from .errors import CompressionError, OneLineParser
from .measure import ModelStats, measure as _measure_torch
from .workload import workload_names, workload_summary, resolve_workload
from .ort import measure_ort, ort_quantize
from .bundle import load_bundle, save_bundle
from .recipe import apply_recipe, load_recipe, validate_recipe, recipe_schema
from . import inputs as I
from .onnx_export import onnx_size_bytes, save_onnx, to_onnx
from .advise import advise, render_advice
from .faster import faster_path
from .timing import TOLERANCE
from .search_cli import add_executor_arguments, add_search_parser, sweep_from_args
from .sensitivity import workload_sensitivity


_REF_HELP = ("the model: a registered name (see `models`), path/to/file.py:attr or package.module:attr "
             "(a Workload or a zero-argument function returning one)")


def _fmt_bytes(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:,.1f} KB"


@contextlib.contextmanager
def _loading():
    """While a workload's own code runs (its package's import, its factory), what it prints goes to stderr, never to
    stdout, so ``--json`` output stays one JSON document: Python's ``sys.stdout`` and file descriptor 1 (prints from
    C extensions) both point at stderr until the workload is loaded."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except OSError:  # no descriptors 1 and 2 (an embedding host): Python's own prints are still redirected
        saved = None
    old, sys.stdout = sys.stdout, sys.stderr
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stdout = old
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _load(ref: str, base_dir=None):
    """``resolve_workload`` with the workload's prints sent to stderr (``_loading``); its notes (inputs cast,
    outputs reduced) on stderr, one line each."""
    with _loading():
        wl = resolve_workload(ref, base_dir=base_dir)
    _say_notes(wl)
    return wl


def _say_notes(wl) -> None:
    for line in getattr(wl, "notes", ()):
        print(f"note: {line}", file=sys.stderr)


def _ram(n: int | None) -> str:
    return "-" if n is None else (f"{n / 2**20:,.2f} MB" if n >= 2**20 else f"{n / 1024:,.1f} KB")


def render_stats(s: ModelStats) -> str:
    """A readable table of one ModelStats."""
    lines = [
        f"model            {s.model}",
        f"params           {s.params:,} ({s.nonzero_params:,} non-zero)",
        f"size             {_fmt_bytes(s.size_bytes)} ({s.size_bytes:,} bytes "
        f"{'.onnx file' if s.runtime == 'onnxruntime' else 'serialized state_dict'})",
    ]
    if s.sparse_size_bytes is not None:
        lines.append(f"sparse-encoded   {_fmt_bytes(s.sparse_size_bytes)}")
    if s.theoretical_size_bytes is not None:
        lines.append(f"theoretical      {_fmt_bytes(s.theoretical_size_bytes)} (simulated: bits x params)")
    lat = "-" if s.latency_ms is None else f"{s.latency_ms:.3f} ms (median of {s.latency_runs} runs)"
    lines += [
        f"latency          {lat}, batch {s.batch_size}, {s.threads} thread(s), runtime {s.runtime}",
        f"{s.metric:<17}{s.metric_text()} (test split"
        + ("" if s.higher_is_better else ", lower is better") + ")",
        *[f"{k:<17}{v:.4f} (test split)" for k, v in s.extra.items()],
        f"FLOPs            {s.flops:,} per sample ({s.nonzero_flops:,} if zeros were skipped)",
        f"peak RAM         {_ram(s.peak_ram_bytes_b1)} at batch 1"
        + (f", {_ram(s.peak_ram_bytes)} at batch {s.batch_size}" if s.batch_size != 1 else "")
        + " (weights + input + live activations)",
        "",
    ]
    # columns sized from the names (GPT-2's "transformer.h.0.attn.c_attn" is wider than a CNN's "conv1"), a line
    # at most LINE_WIDTH characters: a name longer than its column loses its middle
    tw = min(max([18, *(len(layer.type) + 2 for layer in s.layers)]), 24)
    nw = min(max([24, *(len(layer.name) + 2 for layer in s.layers)]), LINE_WIDTH - tw - 57)
    lines.append(f"{'layer':<{nw}}{'type':<{tw}}{'params':>10}{'nonzero':>10}{'sparsity':>10}  {'dtype':<9}{'bits':>4}")
    for layer in s.layers:
        lines.append(
            f"{_elide_middle(layer.name, nw - 2):<{nw}}{_elide_middle(layer.type, tw - 2):<{tw}}"
            f"{layer.params:>10,}{layer.nonzero:>10,}{layer.sparsity * 100:>9.1f}%"
            f"  {layer.dtype:<9}{layer.bits:>4}{' (simulated)' if layer.simulated else ''}"
        )
    return "\n".join(lines)


LINE_WIDTH = 120  # the longest line the measure table prints


def _elide_middle(text: str, width: int) -> str:
    """``text`` at most ``width`` characters: its start and end kept, the middle replaced by "..."."""
    if len(text) <= width:
        return text
    head = (width - 3 + 1) // 2
    return text[:head] + "..." + text[len(text) - (width - 3 - head):]


def _cmd_models(args: argparse.Namespace) -> int:
    refs = list(workload_names()) + [r for r in (args.workload or []) if r not in workload_names()]
    rows = []
    for ref in refs:
        with _loading():
            info = workload_summary(ref)
        for line in info.get("notes") or []:
            print(f"note: {info.get('name', ref)}: {line}", file=sys.stderr)
        rows.append({
            "name": info.get("name", ref), "reference": ref, "task": info.get("task", ""),
            "architecture": info.get("architecture", ""), "dataset": info.get("dataset"),
            "input_shape": info.get("input_shape"), "classes": info.get("num_classes"),
            "classifier": info.get("classifier"), "metric": info.get("metric", "accuracy"),
            "baseline_accuracy": info.get("baseline_metric"), "percent": info.get("percent", True),
        })
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'model':<18}{'metric':>16}  {'architecture':<40}task")
        for r in rows:
            v = r["baseline_accuracy"]
            val = "-" if v is None else f"{r['metric']} " + (f"{v * 100:.2f}%" if r["percent"] else f"{v:.4g}")
            print(f"{r['name']:<18}{val:>16}  {r['architecture'][:39]:<40}{r['task']}")
    return 0


def _cmd_measure(args: argparse.Namespace) -> int:
    def measure(model, data, **kw):  # --runtime: torch measures the module, onnxruntime its ONNX export
        if getattr(args, "runtime", "torch") == "onnxruntime":
            return measure_ort(model, data, **kw)
        return _measure_torch(model, data, **kw)

    if getattr(args, "bundle", None) is not None:
        if args.model is not None:
            raise CompressionError("measure: give --model REF or --bundle PATH, not both")
        with _loading():
            recipe, model = load_bundle(args.bundle)
            wl = recipe.workload()
        _say_notes(wl)
        stats = measure(model, wl, name=recipe.name or f"{wl.name} (bundle)",
                        batch_size=args.batch_size, threads=args.threads)
        faster = None
        if stats.latency_ms is not None and recipe.steps and getattr(args, "runtime", "torch") == "torch":
            # fp32 and the bundle timed together; the other compressed paths only when it is slower
            faster = _compare_engines(wl, model, recipe=recipe, batch_size=args.batch_size, threads=args.threads)
        if args.json:
            out = stats.to_json_dict()
            out["faster_path"] = faster.to_json_dict() if faster is not None else None
            print(json.dumps(out, indent=2))
        else:
            print(render_stats(stats))
            if faster is not None:
                print(faster.line() or f"latency vs fp32: {faster.summary()}")
        return 0
    if args.model is None:
        raise CompressionError("measure: give --model REF (a name from `models`, path/to/file.py:attr or "
                               "package.module:attr) or --bundle PATH")
    wl = _load(args.model)
    stats = measure(wl.model, wl, name=wl.name, batch_size=args.batch_size, threads=args.threads)
    print(json.dumps(stats.to_json_dict(), indent=2) if args.json else render_stats(stats))
    return 0


def _progress_bar() -> "Callable[[float, str], None] | None":
    """A one-line progress bar on stderr, only when stderr is a terminal (never in logs or pipes)."""
    if not sys.stderr.isatty():
        return None

    def show(frac: float, msg: str) -> None:
        filled = int(round(frac * 30))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {frac * 100:5.1f}% {msg[:60]:<60}")
        if frac >= 1.0:
            sys.stderr.write("\r" + " " * 100 + "\r")
        sys.stderr.flush()

    return show


def _cmd_apply(args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe)
    if args.save_model is not None:
        if Path(args.save_model).is_dir():
            raise CompressionError(f"--save-model: {args.save_model!r} is a directory; give a file path")
    with _loading():
        recipe.workload()  # loaded once per process: apply_recipe finds it ready
    result = apply_recipe(recipe, progress=_progress_bar(), measure_batch_size=args.batch_size,
                          threads=args.threads, with_latency=not args.no_latency)
    saved = save_bundle(args.save_model, recipe, result.model) if args.save_model is not None else None
    faster = _slower_check(result.before, result.after, recipe.workload(), result.model, recipe, args)
    if faster is not None and faster.line():
        result.advisories.append(faster.line())
    if args.json:
        out = result.to_json_dict()
        out["faster_path"] = faster.to_json_dict() if faster is not None else None
        print(json.dumps(out, indent=2))
        return 0
    title = recipe.name or args.recipe
    print(f"recipe           {title} (model {recipe.model}, seed {recipe.seed}, {len(recipe.steps)} steps)")
    print(f"\n{'step':<6}{'kind':<22}{'seconds':>9}  touched")
    for st in result.steps:
        touched = ", ".join(st.touched) if st.touched else "(nothing)"
        print(f"{st.index:<6}{st.kind:<22}{st.seconds:>9.2f}  {touched}")
    print("\n--- before ---")
    print(render_stats(result.before))
    print("\n--- after ---")
    print(render_stats(result.after))
    b, a = result.before, result.after
    print(f"\n{a.metric} {b.metric_text()} -> {a.metric_text()}, size {_fmt_bytes(b.size_bytes)} -> "
          f"{_fmt_bytes(a.size_bytes)} ({a.size_bytes / b.size_bytes:.3f}x)")
    if saved is not None:
        print(f"saved bundle     {args.save_model} ({saved:,} bytes: weights {a.size_bytes:,} + recipe and framing)")
    for line in result.advisories:  # the workload's notes, steps' notes, a collapse: one line each
        print(line)
    return 0


def _slower_check(before: ModelStats | None, after: ModelStats | None, wl, model, recipe, args):
    """When latency was measured and the compressed model came out slower than fp32 (by more than the timing
    tolerance), ``faster_path``: fp32, the model and the other compressed paths timed again in one run, with what is
    faster (None otherwise)."""
    if before is None or after is None or before.latency_ms is None or after.latency_ms is None:
        return None
    if after.latency_ms <= before.latency_ms * (1 + TOLERANCE):
        return None
    return _compare_engines(wl, model, recipe=recipe, batch_size=args.batch_size, threads=args.threads)


def _compare_engines(*args, **kwargs):
    """``faster_path(..., only_if_slower=True)``, or None with a one-line note when it refuses: the comparison is
    advice, the report stands without it."""
    try:
        return faster_path(*args, only_if_slower=True, **kwargs)
    except CompressionError as e:
        print(f"note: no engine comparison ({e})", file=sys.stderr)
        return None


def _cmd_validate(args: argparse.Namespace) -> int:
    recipe = validate_recipe(args.recipe)
    kinds = ", ".join(s.kind for s in recipe.steps) or "no steps"
    print(f"OK {args.recipe}: model {recipe.model}, {len(recipe.steps)} steps ({kinds})")
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(recipe_schema(), indent=2))
    return 0


def _add_recipe_commands(sub) -> None:
    a = sub.add_parser("apply", help="apply a recipe (YAML/JSON/Markdown) to its model and report")
    a.add_argument("recipe", metavar="RECIPE", help="recipe file (.yaml, .yml, .json or .md with front matter)")
    a.add_argument("--json", action="store_true", help="print one JSON object: recipe, before, after, steps")
    a.add_argument("--save-model", metavar="PATH", help="write a bundle (recipe + weights) atomically")
    a.add_argument("--batch-size", type=int, default=1, help="batch size for latency (default 1)")
    a.add_argument("--threads", type=int, default=1, help="intra-op threads for latency (default 1)")
    a.add_argument("--no-latency", action="store_true", help="skip the latency measurement (faster)")
    a.set_defaults(func=_cmd_apply)

    v = sub.add_parser("validate", help="check a recipe without running it (layer names, ranges, model)")
    v.add_argument("recipe", metavar="RECIPE", help="recipe file")
    v.set_defaults(func=_cmd_validate)

    s = sub.add_parser("schema", help="print the recipe JSON Schema")
    s.set_defaults(func=_cmd_schema)


def _cmd_export(args: argparse.Namespace) -> int:
    """Export a bundle (or a workload's model, by reference) to ONNX, optionally as ONNX Runtime int8."""
    if args.onnx is None:
        raise CompressionError("export: give --onnx OUT.onnx")
    if os.path.isfile(args.bundle):
        with _loading():
            recipe, model = load_bundle(args.bundle)
            data = recipe.workload()
    elif os.path.isdir(args.bundle):
        raise CompressionError(f"export: {args.bundle!r} is a directory; give a bundle file or a model reference")
    else:
        data = _load(args.bundle)
        model = data.model
    proto = to_onnx(model, I.take(data.test.x, slice(0, 2)))
    if args.int8 != "none":
        import onnx  # lazy: onnx takes about a second to import, and only --int8 needs it here

        proto = onnx.ModelProto.FromString(ort_quantize(proto, args.int8, calib_x=data.calib.x))
    try:
        out = save_onnx(proto, args.onnx, external_data=True if args.external_data else None)
    except OSError as e:
        raise CompressionError(f"--onnx: cannot write {args.onnx!r}: {e.strerror or e}") from None
    print(f"wrote {out.path} ({onnx_size_bytes(out.path):,} bytes"
          + (f", weights in {out.data_path.name}" if out.data_path else "") + ")")
    return 0


def _add_export_command(sub) -> None:
    e = sub.add_parser("export", help="export a bundle (or a model by reference) to ONNX, written atomically")
    e.add_argument("bundle", metavar="BUNDLE|MODEL", help="bundle saved by `apply --save-model`, or a workload "
                   "reference (name, path/to/file.py:attr, package.module:attr)")
    e.add_argument("--onnx", metavar="OUT.onnx", help="the .onnx file to write")
    e.add_argument("--int8", choices=["none", "dynamic", "static"], default="none",
                   help="quantize the export with ONNX Runtime (dynamic, or static QDQ calibrated on the "
                        "calibration split)")
    e.add_argument("--external-data", action="store_true", help="keep the weights in OUT.onnx.data beside it")
    e.set_defaults(func=_cmd_export)


def _cmd_advise(args: argparse.Namespace) -> int:
    if args.model is None:
        raise CompressionError("advise: give --model REF")
    a = advise(args.model, max_drop_pt=args.max_drop)
    faster = None
    chosen = a.candidate(a.recommended)
    if chosen is not None and chosen.latency_ratio > 1 + TOLERANCE:  # the recommended method came out slower
        faster = _compare_engines(args.model, {"version": 1, "model": args.model, "steps": [{"kind": a.recommended}]},
                                  label=chosen.label, batch_size=a.batch_size, threads=a.threads)
    if args.json:
        out = a.to_json_dict()
        out["faster_path"] = faster.to_json_dict() if faster is not None else None
        print(json.dumps(out, indent=2))
    else:
        print(render_advice(a))
        if faster is not None and faster.line():
            print(faster.line())
    return 0


def _add_advise_command(sub) -> None:
    a = sub.add_parser("advise", help="recommend a quantization method for a model, backed by measured numbers")
    a.add_argument("--model", help=_REF_HELP)
    a.add_argument("--max-drop", type=float, default=1.0, help="largest acceptable accuracy drop in points (default 1)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=_cmd_advise)


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    levels = None
    if getattr(args, "levels", None):
        try:
            levels = [float(v) for v in args.levels.split(",") if v.strip()]
        except ValueError:
            raise CompressionError(f"--levels: comma-separated numbers, e.g. 0.3,0.5,0.7 or 8,4,2; got "
                                   f"{args.levels!r}") from None
    if getattr(args, "executor", "local") != "local" or getattr(args, "ray_address", None):
        if levels is not None:
            raise CompressionError("--levels: only with the local executor")
        res = sweep_from_args(args)
    else:
        if args.workers < 1:
            raise CompressionError(f"--workers: at least 1, got {args.workers}")
        res = workload_sensitivity(args.model, args.technique, include_classifier=args.include_classifier,
                                   workers=args.workers, **({"levels": levels} if levels is not None else {}))
    if args.json:
        print(json.dumps(res.to_json_dict(), indent=2))
        return 0
    unit = "sparsity" if args.technique == "prune" else "bits"
    levels = [p[0] for p in res.layers[0].points]
    head = [f"{v * 100:.0f}%" if unit == "sparsity" else f"{v}b" for v in levels]
    scale, shown = (100, f"{res.baseline_accuracy * 100:.2f} %") if res.percent else (1, f"{res.baseline_accuracy:.4g}")
    print(f"{res.model}: calibration {res.metric} ({res.samples} samples"
          + ("" if res.higher_is_better else ", lower is better") + f") with ONE layer at each {unit}; baseline "
          f"{shown}; classifier {'included' if res.include_classifier else 'left alone'}; "
          f"{res.seconds:.2f} s")
    print(f"{'layer':<22}" + "".join(f"{h:>7}" for h in head))
    for c in res.layers:
        print(f"{c.name:<22}" + "".join(f"{a * scale:>7.1f}" for _, a in c.points))
    for h in res.heads or []:
        print(f"head {h.layer}[{h.head}] removed: {h.accuracy * 100:.1f} % ({h.accuracy_drop * 100:+.1f} points drop)")
    return 0


def _add_sensitivity_command(sub) -> None:
    s = sub.add_parser("sensitivity", help="per-layer accuracy when one layer alone is pruned / quantized")
    s.add_argument("--model", required=True, help=_REF_HELP)
    s.add_argument("--technique", choices=["prune", "quantize"], default="prune",
                   help="prune: sparsity 0..95%% (magnitude); quantize: 8..2 bits (simulated)")
    s.add_argument("--include-classifier", action="store_true", help="also sweep the classifier (left alone by default)")
    s.add_argument("--levels", default=None, help="comma-separated levels instead of the defaults, e.g. "
                   "0.3,0.5,0.7,0.9,0.95 (sparsities) or 8,6,4,3,2 (bits)")
    s.add_argument("--workers", type=int, default=1, help="layers swept at once on this many threads, each with its "
                   "own copy of the model (the same numbers; e.g. 2 on a 2-core machine; default 1)")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    add_executor_arguments(s)  # --executor local|ray, --ray-address ADDR
    s.set_defaults(func=_cmd_sensitivity)


def _dashboard_app() -> Path:
    """The installed dashboard's server entry, ``server.py`` (``st.App`` around ``app.py`` with the identity cookie
    and the teacher link), found without importing the dashboard (the library never imports it)."""
    spec = importlib.util.find_spec("dashboard")
    places = [Path(p) for p in (spec.submodule_search_locations or [])] if spec is not None else []
    for place in places:
        if (place / "server.py").is_file() and (place / "app.py").is_file() and (place / "pages").is_dir():
            return place / "server.py"
    where = f" (the `dashboard` package found at {places[0]} is not Compression Lab's)" if places else ""
    raise CompressionError(f"dashboard: not installed{where}; install compression-lab with the dashboard "
                           "(`pip install .` from a checkout), or run `streamlit run dashboard/server.py` in a "
                           "checkout")


def _cmd_dashboard(args: argparse.Namespace) -> int:
    """``streamlit run`` of the installed app in a subprocess; SIGTERM/SIGHUP are passed on to it, Ctrl-C reaches it
    directly (same process group). Returns the server's exit status."""
    if args.port is not None and not 1 <= args.port <= 65535:
        raise CompressionError(f"--port: must be 1..65535, got {args.port}")
    app = _dashboard_app()
    if importlib.util.find_spec("streamlit") is None:
        raise CompressionError("dashboard: streamlit is not installed; install compression-lab's requirements")
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.address,
           "--server.headless", "true"]
    if args.port is not None:
        cmd += ["--server.port", str(args.port)]
    if args.rest:
        cmd += ["--", *args.rest]
    proc = subprocess.Popen(cmd)
    passed = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    before = {s: signal.signal(s, lambda signum, _frame: proc.send_signal(signum)) for s in passed}
    try:
        while True:
            try:
                code = proc.wait()
                break
            except KeyboardInterrupt:  # the server got the same Ctrl-C and is stopping: wait for it
                continue
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    return code if code >= 0 else 128 - code


def _add_dashboard_command(sub) -> None:
    d = sub.add_parser("dashboard", help="start the dashboard (`streamlit run` of the installed app); arguments after "
                       "`--` go to the dashboard: --workload REF, --db URL, --teacher-code, --job-time-limit, ...")
    d.add_argument("--port", type=int, default=None, help="port to serve on (default: Streamlit's, 8501 or the next "
                   "free one)")
    d.add_argument("--address", default="127.0.0.1", help="address to serve on (default 127.0.0.1: this machine "
                   "only; 0.0.0.0 opens it to the network)")
    d.add_argument("rest", nargs="*", metavar="-- DASHBOARD_ARGS", help="after `--`: the dashboard's own flags")
    d.set_defaults(func=_cmd_dashboard)


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m compression_core", description="Compression Lab: compress and measure models.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    m = sub.add_parser("models", help="list the registered models (the samples) and any --workload given")
    m.add_argument("--workload", action="append", metavar="REF", help="also list this workload reference "
                   "(path/to/file.py:attr or package.module:attr; repeatable)")
    m.add_argument("--json", action="store_true", help="print JSON")
    m.set_defaults(func=_cmd_models)

    me = sub.add_parser("measure", help="measure a model: size, latency, metric, FLOPs, layers")
    me.add_argument("--model", help=_REF_HELP)
    me.add_argument("--batch-size", type=int, default=1, help="batch size for latency (default 1)")
    me.add_argument("--threads", type=int, default=1, help="intra-op threads for latency (default 1)")
    me.add_argument("--json", action="store_true", help="print one JSON object")
    me.add_argument("--bundle", metavar="PATH", help="measure a bundle saved by `apply --save-model PATH`")
    me.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch",
                    help="run it in torch (default) or export to ONNX and run it in ONNX Runtime")
    me.set_defaults(func=_cmd_measure)
    _add_recipe_commands(sub)
    _add_export_command(sub)
    _add_advise_command(sub)
    _add_sensitivity_command(sub)
    _add_dashboard_command(sub)
    add_search_parser(sub)
    return p


def _check_args(args: argparse.Namespace) -> None:
    if getattr(args, "batch_size", 1) < 1 or getattr(args, "batch_size", 1) > 4096:
        raise CompressionError(f"--batch-size: must be 1..4096, got {args.batch_size}")
    if getattr(args, "threads", 1) < 1 or getattr(args, "threads", 1) > 256:
        raise CompressionError(f"--threads: must be 1..256, got {args.threads}")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _check_args(args)
        if args.command in ("advise", "sensitivity", "search") and isinstance(getattr(args, "model", None), str):
            _load(args.model)  # its prints to stderr now; the command finds it loaded (once per process)
        return int(args.func(args))
    except CompressionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
