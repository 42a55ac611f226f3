"""Slower than fp32, and what is faster: one compressed model timed against its fp32 baseline and against the
other compressed engines of the same model, all in one run on this machine.

Why: static int8 of an EfficientNet-Lite-like CNN makes a 0.27x file that runs several times slower than fp32 in
torch (torch's ``quantized::conv2d`` with quantize/dequantize pairs around every explicit padding), and the report
said nothing. ``faster_path`` is the one comparison: ``apply`` and ``measure --bundle`` (the CLI, when the model
came out slower), Explore's latency panel and the Advise page (a job on request) all call it, so they agree.

The paths (``PATHS``), each a recipe step a user can take, made from the model before its quantization steps
(the workload's fp32 model, or the recipe's pruned model), and the compressed model itself deployed in ONNX
Runtime (``deploy_onnx``: static int8 as QDQ with torch's own ranges, dynamic int8 as ORT dynamic, packed int4 as
``MatMulNBits``). Every path is timed with the fp32 model in the same interleaved rounds (``timing``'s method: the
fastest call of each block, ratios per round), so a load change hits them alike. A path counts as faster when it
takes at most fp32's time (ratio <= 1) and agrees with fp32's top-1 on the first test items at least as well as
``min_agreement`` or as the compressed model itself does (less ``AGREEMENT_SLACK``: one or two items), whichever is
lower: a fast path that answers differently is no answer, but one that answers as well as the model the user
already chose is.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from . import inputs as I
from .errors import CompressionError
from .measure import predict, size_bytes
from .ort_deploy import deploy_onnx
from .ort_engine import OrtModule
from .quantize import DynamicInt8Config, Int4Config, StaticInt8Config, quantize
from .recipe import RecipeBase, apply_recipe, load_recipe, step_kinds
from .timing import TOLERANCE, model_call, verdict
from .workload import Workload, resolve_workload

# name -> (engine, the recipe step that makes it from the model before quantization)
PATHS: dict[str, tuple[str, dict]] = {
    "ORT QDQ static int8": ("onnxruntime", {"kind": "quantize_static", "engine": "onnxruntime"}),
    "ORT dynamic int8": ("onnxruntime", {"kind": "quantize_dynamic", "engine": "onnxruntime"}),
    "ORT MatMulNBits int4": ("onnxruntime", {"kind": "quantize_int4", "engine": "onnxruntime"}),
    "torch static int8": ("torch", {"kind": "quantize_static"}),
    "torch dynamic int8": ("torch", {"kind": "quantize_dynamic"}),
}
THIS_IN_ORT = "this model in ONNX Runtime"
PATHS_ENV = "COMPRESSION_LAB_FASTER_PATHS"  # the paths tried by default, comma-separated (tests: one cheap one)
_CONFIGS = {"quantize_static": StaticInt8Config, "quantize_dynamic": DynamicInt8Config, "quantize_int4": Int4Config}
AGREEMENT_ITEMS = 64  # top-1 agreement with fp32 on the first items of the test split
MIN_AGREEMENT = 0.9
AGREEMENT_SLACK = 0.05

Timer = Callable[[dict[str, Callable[[], Any]]], dict[str, list[float]]]


class PathTiming(BaseModel):
    """One way of running the model, timed in the same rounds as fp32 (``ratio``: its time / fp32's; below 1 is
    faster)."""

    model_config = ConfigDict(frozen=True)
    path: str
    engine: Literal["torch", "onnxruntime"]
    step: dict | None = None  # the recipe step that makes it (None: the model given)
    ms: float
    ratio: float
    ratio_low: float
    ratio_high: float
    size_bytes: int | None = None
    size_ratio: float | None = None  # against fp32's file
    agreement: float | None = None  # top-1 agreement with fp32 on the first test items; None: not a classifier

    def words(self) -> str:
        bits = [f"{_times(self.ratio)} fp32's time"]
        if self.size_ratio is not None:
            bits.append(f"{self.size_ratio:.2f}x the file")
        if self.agreement is not None:
            bits.append(f"agrees with fp32 on {self.agreement * 100:.0f} %")
        return f"{self.path} ({', '.join(bits)})"


class FasterPath(BaseModel):
    """The compressed model against fp32 and the other compressed paths, all timed in one run."""

    model_config = ConfigDict(frozen=True)
    model: str
    label: str  # what the compressed model is ("static int8")
    batch_size: int
    threads: int
    rounds: int
    baseline_ms: float
    this: PathTiming  # the compressed model as given (torch, or ORT for an OrtModule)
    verdict: Literal["faster", "slower", "no measurable difference"]
    paths: list[PathTiming] = Field(default_factory=list)  # the other compressed paths, fastest first
    faster: PathTiming | None = None  # the fastest path at or below fp32's time that agrees well enough (``bar``)
    skipped: dict[str, str] = Field(default_factory=dict)  # path -> why it was not timed (one line)
    min_agreement: float = MIN_AGREEMENT
    bar: float = MIN_AGREEMENT  # the agreement a path needed: min(min_agreement, this model's - AGREEMENT_SLACK)
    seconds: float = 0.0

    @property
    def slower(self) -> bool:
        return self.verdict == "slower"

    def where(self) -> str:
        """Where fp32 ran (always torch: the model a user starts from) and the conditions."""
        return f"in torch at batch {self.batch_size}, {self.threads} thread{'s' if self.threads != 1 else ''}"

    def what(self) -> str:
        return f"{self.label} (in ONNX Runtime)" if self.this.engine == "onnxruntime" else self.label

    def line(self) -> str | None:
        """One line when the compressed model is slower than fp32, naming a faster compressed path or saying none
        is; None when it is not slower."""
        if not self.slower:
            return None
        head = f"slower: {self.what()} runs {self.this.ratio:.1f}x slower than fp32 {self.where()}"
        if self.faster is not None:
            step = self.faster.step
            how = f" (recipe step {_step_text(step)})" if step else ""
            return f"{head}; faster here: {self.faster.words()}{how}, timed in the same run"
        if self.paths:
            best = self.paths[0]
            return (f"{head}; no compressed path is faster than fp32 here (the fastest, {best.words()}); "
                    "keep fp32 for speed")
        return f"{head}; no compressed path could be timed here ({'; '.join(self.skipped.values()) or 'none offered'})"

    def summary(self) -> str:
        """One line whatever the verdict (the dashboard's caption)."""
        if self.slower:
            return self.line() or ""
        word = {"faster": f"{_times(self.this.ratio)} fp32's time: faster",
                "no measurable difference": f"{self.this.ratio:.2f}x fp32's time: no measurable difference"}
        best = f"; the fastest compressed path here: {self.paths[0].words()}" if self.paths else ""
        return f"{self.what()} against fp32 {self.where()}: {word[self.verdict]}{best}"

    def to_json_dict(self) -> dict:
        out = self.model_dump(mode="json")
        out["line"] = self.line()
        out["summary"] = self.summary()
        return out


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x"


def _step_text(step: dict) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in step.items()) + "}"


# ------------------------------------------------------------------------------------------------- timing
def interleaved_timer(rounds: int = 7, block_seconds: float = 0.05, warmup: int = 2) -> Timer:
    """The default timer: every call timed in ``rounds`` rounds (the order rotating each round), each round one
    block per call of the same wall time (about ``block_seconds`` of the slowest, at least one call); returns the
    fastest call of each block, per round, in ms."""

    def run(calls: dict[str, Callable[[], Any]]) -> dict[str, list[float]]:
        names = list(calls)
        probe = {}
        for n in names:
            for _ in range(warmup):
                calls[n]()
            s = time.perf_counter()
            calls[n]()
            probe[n] = max(time.perf_counter() - s, 1e-7)
        reps = {n: max(1, int(block_seconds / probe[n])) for n in names}
        out: dict[str, list[float]] = {n: [] for n in names}
        for r in range(rounds):
            k = r % len(names)
            for n in names[k:] + names[:k]:
                best = float("inf")
                for _ in range(reps[n]):
                    s = time.perf_counter()
                    calls[n]()
                    best = min(best, time.perf_counter() - s)
                out[n].append(best * 1e3)
        return out

    return run


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


# ------------------------------------------------------------------------------------------------ the paths
def _before_quantization(recipe: RecipeBase, wl: Workload) -> tuple[nn.Module, str]:
    """The recipe's model with its quantization steps left out (the workload's fp32 model when every step
    quantizes, or when a step left in trains: the comparison never trains), and the label of what the recipe does."""
    kinds = step_kinds()
    quant = [s for s in recipe.steps if getattr(kinds.get(s.kind), "ui", None) is not None
             and kinds[s.kind].ui.family == "quantize"]
    rest = [s for s in recipe.steps if s not in quant]
    label = " + ".join(getattr(kinds.get(s.kind), "ui").label.split(" (")[0] if kinds.get(s.kind) else s.kind
                       for s in recipe.steps) or "no steps"
    if not rest or any(getattr(getattr(kinds.get(s.kind), "ui", None), "trains", False) for s in rest):
        return wl.model, label
    plain = recipe.model_copy(update={"steps": rest})
    return apply_recipe(plain, with_latency=False, measure_before=False, measure_after=False,
                        workload=wl).model, label


def _is_recipe(name: str, recipe: RecipeBase) -> bool:
    """True when the path ``name`` is what the recipe does (its one step is that path's step with defaults)."""
    if name not in PATHS or len(recipe.steps) != 1:
        return False
    step = PATHS[name][1]
    cfg = recipe.steps[0]
    want = _CONFIGS[step["kind"]](**{k: v for k, v in step.items() if k != "kind"})
    return cfg == want


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or type(e).__name__
    return msg if isinstance(e, CompressionError) else f"{type(e).__name__}: {msg[:200]}"


def _build_paths(source: nn.Module, model: nn.Module, wl: Workload, names: tuple[str, ...], threads: int,
                 progress: Callable[[float, str], None]) -> tuple[dict[str, tuple[nn.Module, str, dict | None]],
                                                                  dict[str, str]]:
    built: dict[str, tuple[nn.Module, str, dict | None]] = {}
    skipped: dict[str, str] = {}
    todo = [n for n in names if n in PATHS or n == THIS_IN_ORT]
    for i, name in enumerate(todo):
        progress(0.1 + 0.4 * i / max(len(todo), 1), f"building {name}")
        try:
            if name == THIS_IN_ORT:
                if isinstance(model, OrtModule):
                    continue  # it already runs in ONNX Runtime
                m, engine, step = OrtModule(deploy_onnx(model, wl), threads=threads), "onnxruntime", None
            else:
                engine, step = PATHS[name]
                cfg = _CONFIGS[step["kind"]](**{k: v for k, v in step.items() if k != "kind"})
                m = quantize(source, cfg, wl)
                if isinstance(m, OrtModule):
                    m.threads = threads  # its session (built on first call) with the threads asked for
            built[name] = (m, engine, step)
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as e:  # a path that refuses this model (no Linear layer for int4, an op ORT lacks): skipped
            skipped[name] = f"{name}: {_one_line(e)}"
    return built, skipped


def default_paths() -> tuple[str, ...]:
    """The paths ``faster_path`` tries when none are given: every one, or those named in $COMPRESSION_LAB_FASTER_PATHS
    (comma-separated; empty: only fp32 and the model are timed)."""
    raw = os.environ.get(PATHS_ENV)
    if raw is None:
        return (THIS_IN_ORT, *PATHS)
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    bad = [n for n in names if n not in PATHS and n != THIS_IN_ORT]
    if bad:
        raise CompressionError(f"{PATHS_ENV}: unknown path {bad[0]!r}; choose from {', '.join([THIS_IN_ORT, *PATHS])}")
    return names


def _labels(model: nn.Module, x: Any) -> torch.Tensor | None:
    out = predict(model, x)
    return out.argmax(-1) if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[-1] > 1 else None


def faster_path(
    workload: Workload | str,
    compressed: nn.Module | RecipeBase | dict | str,
    label: str | None = None,
    batch_size: int = 1,
    threads: int = 1,
    paths: tuple[str, ...] | None = None,
    timer: Timer | None = None,
    rounds: int = 7,
    only_if_slower: bool = False,
    min_agreement: float = MIN_AGREEMENT,
    tolerance: float = TOLERANCE,
    progress: Callable[[float, str], None] | None = None,
    recipe: RecipeBase | dict | str | None = None,
) -> FasterPath:
    """Time ``compressed`` (a model, or a recipe that is applied here) against ``workload``'s fp32 model and the
    compressed ``paths`` (default: ``default_paths()``, every one in ``PATHS`` and the model itself in ONNX Runtime),
    all in the same interleaved rounds at ``batch_size`` with ``threads`` intra-op threads, and name the fastest path
    at or below fp32's time (``FasterPath.line()``). ``only_if_slower``: time fp32 and the model first, and build
    the other paths only when the model is slower. ``timer``: {name: zero-argument call} -> {name: per-round ms} (tests
    inject one; the default is ``interleaved_timer(rounds)``). ``recipe``: the recipe a given model came from (the
    other paths then start from its model before quantization, and a path the recipe already is is not repeated)."""
    t0 = time.perf_counter()
    say = progress or (lambda f, m: None)
    wl = resolve_workload(workload) if not isinstance(workload, Workload) else workload
    source: nn.Module = wl.model
    what = "the compressed model"
    if not isinstance(compressed, nn.Module):
        recipe = compressed
    if recipe is not None and not isinstance(recipe, RecipeBase):
        recipe = load_recipe(recipe)
    if isinstance(compressed, nn.Module):
        model = compressed
    else:
        say(0.02, "applying the recipe")
        model = apply_recipe(recipe, with_latency=False, measure_before=False, measure_after=False,
                             workload=wl).model
    names = paths if paths is not None else default_paths()
    if recipe is not None:
        source, what = _before_quantization(recipe, wl)
        names = tuple(n for n in names if not _is_recipe(n, recipe))
    what = label or what
    timer = timer or interleaved_timer(rounds=rounds)
    example = I.head(wl.test.x, batch_size)
    x_agree = I.head(wl.test.x, AGREEMENT_ITEMS)
    ref = _labels(wl.model, x_agree)
    fp32_size = size_bytes(wl.model)
    this_engine = "onnxruntime" if isinstance(model, OrtModule) else "torch"

    def timed(models: dict[str, nn.Module]) -> dict[str, tuple[float, float, float, float]]:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            with torch.no_grad():
                raw = timer({n: model_call(m, example) for n, m in models.items()})
        finally:
            torch.set_num_threads(old)
        base = raw["fp32"]
        out = {}
        for n, ms in raw.items():
            ratios = [a / b for a, b in zip(ms, base)]
            lo, mid, hi = _quartiles(ratios)
            out[n] = (statistics.median(ms), lo, mid, hi, len(ms))
        return out

    def timing(name: str, m: nn.Module, engine: str, step: dict | None, t: tuple) -> PathTiming:
        agree = None
        if ref is not None:
            got = _labels(m, x_agree)
            agree = float((got == ref).float().mean()) if got is not None and got.shape == ref.shape else None
        sb = size_bytes(m)
        return PathTiming(path=name, engine=engine, step=step, ms=t[0], ratio=t[2], ratio_low=t[1], ratio_high=t[3],
                          size_bytes=sb, size_ratio=sb / fp32_size if fp32_size else None, agreement=agree)

    say(0.05, "timing fp32 and the compressed model")
    first = timed({"fp32": wl.model, "this": model})
    v = verdict(first["this"][1], first["this"][3], tolerance)
    built: dict = {}
    skipped: dict[str, str] = {}
    if not (only_if_slower and v != "slower"):
        built, skipped = _build_paths(source, model, wl, names, threads, say)
    if built:
        say(0.55, f"timing fp32, the compressed model and {len(built)} other paths, interleaved")
        t = timed({"fp32": wl.model, "this": model, **{n: b[0] for n, b in built.items()}})
        v = verdict(t["this"][1], t["this"][3], tolerance)
    else:
        t = first
    say(0.9, "checking the paths' answers against fp32")
    this = timing(what, model, this_engine, None, t["this"])
    others = sorted((timing(n, m, e, s, t[n]) for n, (m, e, s) in built.items()), key=lambda p: p.ratio)
    bar = min_agreement if this.agreement is None else min(min_agreement, this.agreement - AGREEMENT_SLACK)
    good = [p for p in others if p.ratio <= 1.0 and (p.agreement is None or p.agreement >= bar)]
    say(1.0, "done")
    return FasterPath(model=wl.name, label=what, batch_size=I.n_items(example), threads=threads,
                      rounds=t["fp32"][4], baseline_ms=t["fp32"][0], this=this, verdict=v,
                      paths=others, faster=good[0] if good else None, skipped=skipped, min_agreement=min_agreement,
                      bar=bar,
                      seconds=time.perf_counter() - t0)


__all__ = ["FasterPath", "PATHS", "PATHS_ENV", "PathTiming", "THIS_IN_ORT", "Timer", "default_paths", "faster_path",
           "interleaved_timer"]
