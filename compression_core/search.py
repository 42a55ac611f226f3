"""Multi-objective search over recipes: the front of best trade-offs between the workload's metric, file size and
(optionally) latency, found with Optuna's multi-objective samplers.

Why: ``fit_budget`` fits per-layer sparsity to ONE size target from single-layer curves; a user choosing how far to
compress wants the whole front (NNI's auto-compression, Neural Magic's Sparsify, Edge Impulse's EON Tuner search; AMC,
He et al. 2018, for per-layer choices). Each trial is a plain recipe, applied and measured for real:

- search space: per-layer unstructured sparsity (per group of consecutive layers when a model has more than
  ``max_groups`` prunable layers) on ``fit_budget``'s 2.5 % grid (0 .. 95 %), a storage method (none, dynamic int8,
  static int8, int4 weights; int4 GPTQ and int3 AWQ when asked for; only those this workload accepts), int8
  embedding tables (models with nn.Embedding)
  and optionally a structured ratio (neurons / channels masked then removed with ``shrink``);
- objectives: the workload's metric on the test split (``ModelStats.accuracy``, as ``apply`` reports it), the file
  size in bytes (``shipped_size``: the sparse-encoded file when it is smaller than the dense ``torch.save`` file, as
  ``fit_budget`` counts a pruned model; else the dense file) and optionally latency (1 thread, batch 1, median)
  and peak inference RAM (``ram``: ``ModelStats.peak_ram_bytes`` at batch 1, compression_core.peak_ram);
- constraints: ``max_size_bytes``, ``max_drop`` (metric points below the baseline; for a lower-is-better metric
  such as perplexity, the rise in percent of the baseline, ``workload.metric_loss``) and ``max_ram_bytes`` (peak
  inference RAM at batch 1); infeasible trials never reach the front;
- the search is seeded with the uniform settings (uniform sparsity 50 .. 90 %, each storage method alone) and with
  ``fit_budget`` fits at the uniform sizes (models with at most 8 prunable layers: on a transformer a fit's
  refinement alone takes hours), so the front can only improve on them;
- deterministic for a seed: trials are asked in fixed batches and told in trial order, so the sampling never depends
  on which worker finished first; the local and the Ray executor give the same front (latency aside: it is a
  measurement of the machine).

The test split both selects and scores the front points (the numbers a user sees with ``apply``): the front is
optimistic by the selection, as any search scored on its own test set.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from pydantic import BaseModel
from torch import nn

from .errors import CompressionError
from .trials import evaluate_recipe, shipped_size  # what each trial runs (also in this module's API)
from .budget import explicit_step
from .recipe import parse_recipe, recipe_to_dict, apply_recipe
from .targets import classifier_name, resolve_targets
from .technique import StepContext
from .executors import make_executor, sweep_on
from .workload import metric_loss, metric_up, resolve_workload

OBJECTIVES = ("accuracy", "size", "latency", "ram")
SPARSITY_STEP = 0.025
SPARSITY_LEVELS: tuple[float, ...] = tuple(round(i * SPARSITY_STEP, 3) for i in range(39))  # fit_budget's grid
STRUCTURED_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)
UNIFORM_SEEDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9)
FIT_SEEDS: tuple[float, ...] = (0.7, 0.8, 0.9)  # fit_budget at the size of these uniform sparsities
# fit_budget sweeps every layer on the 2.5 % grid and refines with pairwise moves (cost ~ layers^2 x levels real
# evaluations): seeded automatically only for models with at most this many prunable layers
FIT_SEED_MAX_LAYERS = 8
METHODS: dict[str, dict | None] = {  # storage method -> the recipe step that applies it
    "none": None,
    "int8": {"kind": "quantize_dynamic"},
    "int8_static": {"kind": "quantize_static"},
    "int4": {"kind": "quantize_int4"},
    # calibrated LLM methods (seconds per layer on a transformer): searched when asked for, not by default
    "int4_gptq": {"kind": "quantize_weight_only", "bits": 4, "method": "gptq"},
    "int3_awq": {"kind": "quantize_weight_only", "bits": 3, "method": "awq"},
}
DEFAULT_METHODS: tuple[str, ...] = ("none", "int8", "int8_static", "int4")
SAMPLERS = ("tpe", "nsga2")
EMBEDDING_CHOICES = ("float", "int8")  # nn.Embedding tables: left float or int8 row-wise (quantize_embedding)


# ------------------------------------------------------------------------------------------------- space
@dataclass(frozen=True)
class SearchSpace:
    """What a trial chooses: a sparsity level per group of layers, a storage method, a structured ratio."""

    layers: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]
    methods: tuple[str, ...]
    structured_units: tuple[str, ...] = ()
    include_classifier: bool = False
    embeddings: bool = False  # the model has nn.Embedding tables int8 can store (quantize_embedding)

    def group_param(self, i: int) -> str:
        g = self.groups[i]
        return f"sparsity:{g[0]}" if len(g) == 1 else f"sparsity:group{i}"

    def distributions(self) -> dict:
        from optuna.distributions import CategoricalDistribution, IntDistribution  # lazy: optuna takes ~0.4 s to import

        d: dict[str, Any] = {self.group_param(i): IntDistribution(0, len(SPARSITY_LEVELS) - 1)
                             for i in range(len(self.groups))}
        d["method"] = CategoricalDistribution(list(self.methods))
        if self.structured_units:
            d["structured"] = IntDistribution(0, len(STRUCTURED_LEVELS) - 1)
        if self.embeddings:
            d["embedding"] = CategoricalDistribution(list(EMBEDDING_CHOICES))
        return d

    def params_for(self, sparsity: dict[str, float] | float, method: str = "none", structured: float = 0.0,
                   embedding: str = "float") -> dict:
        """Optuna parameters for a per-layer (or uniform) sparsity, a method and a structured ratio (grouped layers
        take their weight-free mean, rounded to the grid)."""
        out: dict[str, Any] = {}
        for i, g in enumerate(self.groups):
            if isinstance(sparsity, dict):
                level = sum(float(sparsity.get(n, 0.0)) for n in g) / len(g)
            else:
                level = float(sparsity)
            out[self.group_param(i)] = _level_index(level)
        out["method"] = method
        if self.structured_units:
            out["structured"] = min(range(len(STRUCTURED_LEVELS)), key=lambda k: abs(STRUCTURED_LEVELS[k] - structured))
        if self.embeddings:
            out["embedding"] = embedding
        return out

    def describe(self, params: dict) -> dict:
        """Readable settings of a trial: per-layer sparsity, method, structured ratio."""
        sparsity = {}
        for i, g in enumerate(self.groups):
            level = SPARSITY_LEVELS[int(params[self.group_param(i)])]
            for n in g:
                sparsity[n] = level
        return {"sparsity": sparsity, "method": params["method"],
                "structured": STRUCTURED_LEVELS[int(params.get("structured", 0))],
                "embedding": params.get("embedding", "float")}

    def steps(self, params: dict) -> list[dict]:
        """The recipe steps of a trial: structured masks + shrink, per-layer unstructured pruning, storage method."""
        d = self.describe(params)
        steps: list[dict] = []
        if d["structured"] > 0:
            for unit in self.structured_units:
                steps.append({"kind": "prune_structured", "amount": d["structured"], "unit": unit})
            steps.append({"kind": "shrink"})
        if any(v > 0 for v in d["sparsity"].values()):
            steps.append(explicit_step("prune", d["sparsity"], self.include_classifier).model_dump(mode="json"))
        method = METHODS[d["method"]]
        if method is not None:
            steps.append(dict(method))
        if d["embedding"] == "int8":
            steps.append({"kind": "quantize_embedding"})
        return steps


def _level_index(level: float) -> int:
    return min(range(len(SPARSITY_LEVELS)), key=lambda k: abs(SPARSITY_LEVELS[k] - level))


def _groups(layers: Sequence[str], max_groups: int) -> tuple[tuple[str, ...], ...]:
    """One group per layer, or ``max_groups`` runs of consecutive layers (model order) of near-equal count."""
    n = len(layers)
    if n <= max_groups:
        return tuple((name,) for name in layers)
    bounds = [round(i * n / max_groups) for i in range(max_groups + 1)]
    return tuple(tuple(layers[bounds[i]:bounds[i + 1]]) for i in range(max_groups))


def make_recipe(ref: str, steps: list[dict], name: str | None = None, description: str | None = None) -> dict:
    """A normalised recipe dict (every step's defaults filled in, as ``recipe_to_dict`` writes it)."""
    data: dict[str, Any] = {"version": 1, "model": ref, "seed": 0, "steps": steps}
    if name:
        data["name"] = name
    if description:
        data["description"] = description
    return recipe_to_dict(parse_recipe(data))


def build_space(wl, methods: Sequence[str] | None = None, structured: bool = False, include_classifier: bool = False,
                max_groups: int = 16) -> SearchSpace:
    """The search space for a workload: its prunable Linear/Conv2d layers (classifier left alone unless asked),
    grouped when there are more than ``max_groups``; the storage methods and structured units that apply to it
    (each checked by replaying its structural change on the model, after 50 % pruning)."""
    if max_groups < 1:
        raise CompressionError(f"max_groups: must be >= 1, got {max_groups}")
    ctx = StepContext(data=wl)
    layers = resolve_targets(wl.model, None, [], (nn.Linear, nn.Conv2d), classifier_name(wl.model, ctx),
                             include_classifier)
    if not layers:
        raise CompressionError("model: no prunable Linear/Conv2d layer (besides the classifier) to search over")
    asked = tuple(methods) if methods is not None else DEFAULT_METHODS
    unknown = [m for m in asked if m not in METHODS]
    if unknown:
        raise CompressionError(f"methods: unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}")
    groups = _groups(layers, max_groups)
    base = SearchSpace(tuple(layers), groups, ("none",), (), include_classifier)
    half = base.steps(base.params_for(0.5))

    def works(steps: list[dict]) -> bool:
        try:
            apply_recipe(make_recipe(wl.reference or wl.name, steps), workload=wl, replay=True, measure_before=False,
                         measure_after=False)
            return True
        except CompressionError:
            return False

    ok_methods = tuple(m for m in asked if METHODS[m] is None or works(half + [dict(METHODS[m])]))
    if not ok_methods:
        raise CompressionError(f"methods: none of {', '.join(asked)} applies to this model")
    units: tuple[str, ...] = ()
    if structured:
        units = tuple(u for u in ("channels", "neurons")
                      if works([{"kind": "prune_structured", "amount": 0.1, "unit": u}, {"kind": "shrink"}]))
    embeddings = (any(isinstance(m, nn.Embedding) for m in wl.model.modules())
                  and works(half + [{"kind": "quantize_embedding"}]))
    return SearchSpace(tuple(layers), groups, ok_methods, units, include_classifier, embeddings)


class SearchPoint(BaseModel):
    """One measured trial: its recipe, its settings and its numbers (size: ``shipped_size``)."""

    trial: int
    origin: str  # "uniform", "method", "fit_budget", "search"
    settings: dict
    recipe: dict
    accuracy: float | None = None
    size_bytes: int | None = None
    size_kind: str | None = None
    size_ratio: float | None = None
    latency_ms: float | None = None
    peak_ram_bytes: int | None = None  # peak inference RAM at batch 1
    feasible: bool = False
    error: str | None = None
    seconds: float = 0.0

    def front_entry(self) -> dict:
        return {"recipe": self.recipe, "accuracy": self.accuracy, "size_bytes": self.size_bytes,
                "latency_ms": self.latency_ms, "peak_ram_bytes": self.peak_ram_bytes}


class SearchResult(BaseModel):
    """A finished (or cancelled) search: the baseline, every trial and the non-dominated front (smallest first)."""

    model: str
    metric: str
    higher_is_better: bool = True  # the metric's direction (False: perplexity; the search minimises it)
    baseline: dict
    objectives: list[str]
    constraints: dict
    trials: int
    failed: int
    seconds: float
    first_point_seconds: float | None
    executor: str
    workers: int | None
    sampler: str
    seed: int
    batch_size: int
    cancelled: bool = False
    space: dict
    front: list[SearchPoint]
    points: list[SearchPoint]

    def to_json_dict(self) -> dict:
        """The object ``search --json`` prints."""
        return {"model": self.model, "metric": self.metric, "higher_is_better": self.higher_is_better,
                "baseline": {"accuracy": self.baseline["accuracy"], "size_bytes": self.baseline["size_bytes"]},
                "trials": self.trials, "seconds": round(self.seconds, 3), "executor": self.executor,
                "front": [p.front_entry() for p in self.front]}

    def summary(self) -> dict:
        """Everything, for the summary file ``--out`` writes."""
        return {**self.to_json_dict(), "metric": self.metric, "baseline": self.baseline, "objectives": self.objectives,
                "constraints": self.constraints, "failed": self.failed, "first_point_seconds": self.first_point_seconds,
                "workers": self.workers, "sampler": self.sampler, "seed": self.seed, "batch_size": self.batch_size,
                "cancelled": self.cancelled, "space": self.space,
                "front": [p.model_dump() for p in self.front]}


def _vector(p: SearchPoint, objectives: Sequence[str], higher_is_better: bool = True) -> tuple[float, ...]:
    """Objective values as numbers to MINIMISE (the metric negated when higher is better)."""
    out = []
    for o in objectives:
        if o == "accuracy":
            out.append(-float(p.accuracy) if higher_is_better else float(p.accuracy))
        elif o == "size":
            out.append(float(p.size_bytes))
        elif o == "ram":
            out.append(float(p.peak_ram_bytes) if p.peak_ram_bytes is not None else math.inf)
        else:
            out.append(float(p.latency_ms) if p.latency_ms is not None else math.inf)
    return tuple(out)


def pareto_front(points: Sequence[SearchPoint], objectives: Sequence[str] = ("accuracy", "size"),
                 higher_is_better: bool = True) -> list[SearchPoint]:
    """The feasible points no other feasible point dominates (as good in every objective, better in one); of equal
    points the earliest trial; smallest file first. ``higher_is_better=False``: the metric is minimised
    (perplexity)."""
    cands = [p for p in points if p.feasible and p.error is None]
    vecs = {p.trial: _vector(p, objectives, higher_is_better) for p in cands}
    front: list[SearchPoint] = []
    seen: set[tuple[float, ...]] = set()
    for p in sorted(cands, key=lambda q: q.trial):
        v = vecs[p.trial]
        if v in seen:
            continue
        if any(all(a <= b for a, b in zip(vecs[q.trial], v)) and vecs[q.trial] != v for q in cands):
            continue
        seen.add(v)
        front.append(p)
    sign = -1 if higher_is_better else 1
    return sorted(front, key=lambda p: (p.size_bytes, sign * p.accuracy, p.trial))


# ------------------------------------------------------------------------------------------------ search
ProgressFn = Callable[[float, str], None]


@dataclass
class _State:
    points: list[SearchPoint] = field(default_factory=list)
    first_point: float | None = None


def _check_args(trials: int, objectives: Sequence[str], max_size_bytes, max_drop, sampler: str,
                batch_size: int, max_ram_bytes=None) -> tuple[str, ...]:
    if isinstance(trials, bool) or not isinstance(trials, int) or not 1 <= trials <= 100_000:
        raise CompressionError(f"trials: must be an integer 1..100000, got {trials!r}")
    objs = tuple(dict.fromkeys(o.strip() for o in objectives))
    bad = [o for o in objs if o not in OBJECTIVES]
    if bad:
        raise CompressionError(f"objectives: unknown objective {bad[0]!r}; choose from accuracy, size, latency, ram")
    if "accuracy" not in objs or "size" not in objs:
        raise CompressionError(f"objectives: must include accuracy and size (latency and ram are optional), got "
                               f"{','.join(objs)}")
    if max_size_bytes is not None and (isinstance(max_size_bytes, bool) or not isinstance(max_size_bytes, int)
                                       or max_size_bytes <= 0):
        raise CompressionError(f"max_size_bytes: must be a positive number of bytes, got {max_size_bytes!r}")
    if max_ram_bytes is not None and (isinstance(max_ram_bytes, bool) or not isinstance(max_ram_bytes, int)
                                      or max_ram_bytes <= 0):
        raise CompressionError(f"max_ram_bytes: must be a positive number of bytes, got {max_ram_bytes!r}")
    if max_drop is not None:
        if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop) \
                or not 0 <= max_drop <= 100:
            raise CompressionError(f"max_drop: must be 0..100 metric points (percent rise for a lower-is-better "
                                   f"metric such as perplexity), got {max_drop!r}")
    if sampler not in SAMPLERS:
        raise CompressionError(f"sampler: must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 4096:
        raise CompressionError(f"batch_size: must be an integer 1..4096, got {batch_size!r}")
    return tuple(o for o in OBJECTIVES if o in objs)


def _sampler(name: str, seed: int, batch_size: int):
    """Seeded samplers; constraints come from ``Trial.set_constraint`` (Optuna 5), read by both."""
    import optuna  # lazy: optuna takes ~0.4 s to import and only a search needs it

    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=max(2 * batch_size, 16), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)


def search(
    model: str,
    trials: int = 40,
    objectives: Sequence[str] = ("accuracy", "size"),
    max_size_bytes: int | None = None,
    max_drop: float | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    seed: int = 0,
    sampler: str = "tpe",
    batch_size: int = 8,
    methods: Sequence[str] | None = None,
    structured: bool = False,
    include_classifier: bool = False,
    max_groups: int = 16,
    seed_trials: bool = True,
    fit_seeds: bool | None = None,
    progress: ProgressFn | None = None,
    on_trial: Callable[[SearchPoint, list[SearchPoint]], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    max_ram_bytes: int | None = None,
) -> SearchResult:
    """Search recipes for the workload ``model`` (a reference: registered name, ``file.py:attr`` or
    ``package.module:attr``) and return the non-dominated front of measured recipes.

    ``trials`` counts every evaluated recipe, the seeded uniform settings and budget fits included (first).
    ``fit_seeds`` (default: models with at most ``FIT_SEED_MAX_LAYERS`` prunable layers) adds ``fit_budget`` fits at
    the uniform sizes; on a transformer the fit's per-layer refinement alone would cost hours. Trials are
    asked ``batch_size`` at a time and told in trial order, so ``seed`` (and ``batch_size``) fix the result whatever
    the executor (``"local"`` or ``"ray"``; ``ray_address`` connects to a cluster, else a local Ray runtime with
    ``workers`` CPUs on 127.0.0.1). ``on_trial(point, front)`` is called as each trial finishes (completion order);
    ``should_stop()`` is checked between batches (the dashboard's cancel button). ``max_ram_bytes`` bounds peak
    inference RAM at batch 1 (``ModelStats.peak_ram_bytes``); ``"ram"`` in ``objectives`` minimises it.
    """
    objs = _check_args(trials, objectives, max_size_bytes, max_drop, sampler, batch_size, max_ram_bytes)
    t0 = time.perf_counter()
    with make_executor(executor, ray_address=ray_address, workers=workers) as ex:  # bad/unreachable: before anything
        return _search(ex, model, trials, objs, max_size_bytes, max_drop, seed, sampler, batch_size, methods,
                       structured, include_classifier, max_groups, seed_trials, fit_seeds, progress, on_trial,
                       should_stop, t0, max_ram_bytes)


def _search(ex, model, trials, objs, max_size_bytes, max_drop, seed, sampler, batch_size, methods, structured,
            include_classifier, max_groups, seed_trials, fit_seeds, progress, on_trial, should_stop,
            t0, max_ram_bytes=None) -> SearchResult:
    import optuna  # lazy: optuna takes ~0.4 s to import and only a search needs it
    from optuna.trial import TrialState  # lazy: as optuna

    say = progress or (lambda f, m: None)
    wl = resolve_workload(model)
    ref = wl.reference or model
    space = build_space(wl, methods, structured, include_classifier, max_groups)
    with_latency = "latency" in objs
    base = evaluate_recipe(ref, {"recipe": make_recipe(ref, []), "latency": with_latency})
    if "error" in base:
        raise CompressionError(base["error"])
    up = metric_up(wl.metric)
    percent = bool(getattr(wl.metric, "percent", True))
    baseline = {"accuracy": base["accuracy"], "size_bytes": base["size_bytes"], "latency_ms": base["latency_ms"],
                "peak_ram_bytes": base.get("peak_ram_bytes"),
                "metric": base["metric"], "higher_is_better": up, "percent": percent}

    def shown(v: float) -> str:
        return f"{v * 100:.2f} %" if percent else f"{v:.4g}"

    if max_size_bytes is not None:
        _check_reachable(ex, ref, space, max_size_bytes)
    constraints = {"max_size_bytes": max_size_bytes, "max_drop": max_drop, "max_ram_bytes": max_ram_bytes}
    say(0.0, f"baseline {base['metric']} {shown(base['accuracy'])}, {base['size_bytes']:,} bytes; "
             f"{len(space.groups)} sparsity group(s), methods {', '.join(space.methods)}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = [{"accuracy": "maximize" if up else "minimize", "size": "minimize", "latency": "minimize",
                   "ram": "minimize"}[o] for o in objs]
    study = optuna.create_study(directions=directions, sampler=_sampler(sampler, seed, batch_size))
    dists = space.distributions()

    queue: list[tuple[dict, str]] = []
    if seed_trials:
        queue += [(space.params_for(s), "uniform") for s in UNIFORM_SEEDS]
        queue += [(space.params_for(0.0, m), "method") for m in space.methods if m != "none"]
        if space.embeddings:
            queue += [(space.params_for(0.0, m, embedding="int8"), "method") for m in space.methods]
    for params, origin in queue[:trials]:
        study.enqueue_trial(params, user_attrs={"origin": origin})
    if fit_seeds is None:
        fit_seeds = len(space.layers) <= FIT_SEED_MAX_LAYERS
    fits_pending = seed_trials and fit_seeds
    state = _State()
    cancelled = False
    done = 0
    while done < trials:
        if should_stop is not None and should_stop():
            cancelled = True
            break
        if fits_pending and done >= min(len(queue), trials):
            fits_pending = False
            say(done / trials, "fit_budget seeds: sensitivity curves and fits at the uniform sizes")
            for params, origin in _fit_seeds(space, state.points, max_size_bytes, max_drop, ex, ref)[
                    : trials - done]:
                study.enqueue_trial(params, user_attrs={"origin": origin})
        n = min(batch_size, trials - done)
        asked = [study.ask(dists) for _ in range(n)]
        recipes = []
        for t in asked:
            recipes.append(make_recipe(ref, space.steps(t.params), name=f"{wl.name} search trial {t.number}"))
        batch: dict[int, SearchPoint] = {}

        def finished(i: int, r: dict, asked=asked, recipes=recipes, batch=batch) -> None:
            t = asked[i]
            p = _point(t.number, t.user_attrs.get("origin", "search"), space.describe(t.params), recipes[i], r,
                       baseline, max_size_bytes, max_drop, max_ram_bytes)
            batch[i] = p
            state.points.append(p)
            if state.first_point is None and p.feasible:
                state.first_point = time.perf_counter() - t0
            front = pareto_front(state.points, objs, up)
            if on_trial is not None:
                on_trial(p, front)
            what = (f"error: {p.error}" if p.error else
                    f"{shown(p.accuracy)}, {p.size_bytes:,} B ({p.size_ratio:.3f}x)"
                    + (f", {p.latency_ms:.3f} ms" if p.latency_ms is not None else "")
                    + ("" if p.feasible else " (infeasible)"))
            say(len(state.points) / trials, f"trial {p.trial + 1}/{trials} [{p.origin}] {what}; front {len(front)}")

        ex.run("trial", ref, [{"recipe": r, "latency": with_latency} for r in recipes], finished)
        for i, t in enumerate(asked):  # told in trial order: the next batch never depends on completion order
            p = batch[i]
            if p.error is not None:
                study.tell(t, state=TrialState.FAIL)
                continue
            for key, v in _violations(p, baseline, max_size_bytes, max_drop, max_ram_bytes).items():
                t.set_constraint(key, v)
            values = [{"accuracy": p.accuracy, "size": float(p.size_bytes),
                       "latency": p.latency_ms if p.latency_ms is not None else math.inf,
                       "ram": float(p.peak_ram_bytes) if p.peak_ram_bytes is not None else math.inf}[o] for o in objs]
            study.tell(t, values)
        done += n
    executor_name, n_workers = ex.name, ex.workers
    points = sorted(state.points, key=lambda p: p.trial)
    return SearchResult(
        model=ref, metric=baseline["metric"], higher_is_better=up, baseline=baseline, objectives=list(objs),
        constraints=constraints,
        trials=len(points), failed=sum(p.error is not None for p in points), seconds=time.perf_counter() - t0,
        first_point_seconds=state.first_point, executor=executor_name, workers=n_workers, sampler=sampler, seed=seed,
        batch_size=batch_size, cancelled=cancelled,
        space={"layers": list(space.layers), "groups": [list(g) for g in space.groups], "methods": list(space.methods),
               "structured_units": list(space.structured_units), "embeddings": space.embeddings,
               "sparsity_levels": list(SPARSITY_LEVELS)},
        front=pareto_front(points, objs, up), points=points)


def _violations(p: SearchPoint, baseline: dict, max_size_bytes, max_drop, max_ram_bytes=None) -> dict[str, float]:
    """Optuna constraint values (<= 0 is feasible) for the size, metric-drop and peak-RAM bounds (a trial whose RAM
    could not be measured does not meet a RAM bound)."""
    out = {}
    if max_size_bytes is not None:
        out["max_size_bytes"] = float(p.size_bytes - max_size_bytes)
    if max_ram_bytes is not None:
        out["max_ram_bytes"] = float(p.peak_ram_bytes - max_ram_bytes) if p.peak_ram_bytes is not None else math.inf
    if max_drop is not None:
        out["max_drop"] = metric_loss(baseline.get("higher_is_better", True), baseline["accuracy"], p.accuracy) \
            - max_drop
    return out


def _point(trial: int, origin: str, settings: dict, recipe: dict, r: dict, baseline: dict, max_size_bytes,
           max_drop, max_ram_bytes=None) -> SearchPoint:
    if "error" in r:
        return SearchPoint(trial=trial, origin=origin, settings=settings, recipe=recipe, error=r["error"])
    p = SearchPoint(trial=trial, origin=origin, settings=settings, recipe=recipe, accuracy=r["accuracy"],
                    size_bytes=r["size_bytes"], size_kind=r["size_kind"],
                    size_ratio=round(r["size_bytes"] / baseline["size_bytes"], 6), latency_ms=r["latency_ms"],
                    peak_ram_bytes=r.get("peak_ram_bytes"),
                    seconds=r.get("seconds", 0.0))
    feasible = all(v <= 1e-9 for v in _violations(p, baseline, max_size_bytes, max_drop, max_ram_bytes).values())
    return p.model_copy(update={"feasible": feasible})


def _check_reachable(ex, ref: str, space: SearchSpace, max_size_bytes: int) -> None:
    """A size bound below the smallest file the space can reach (every group at the top sparsity, each method, int8
    embeddings) is a bad constraint: one line, before any trial runs."""
    smallest = None
    payloads = [{"recipe": make_recipe(ref, space.steps(space.params_for(SPARSITY_LEVELS[-1], m, STRUCTURED_LEVELS[-1],
                                                                          "int8" if space.embeddings else "float")))}
                for m in space.methods]
    for r in ex.run("trial", ref, payloads):
        if "error" not in r:
            smallest = r["size_bytes"] if smallest is None else min(smallest, r["size_bytes"])
    if smallest is not None and max_size_bytes < smallest:
        raise CompressionError(f"max_size_bytes: {max_size_bytes} is smaller than the smallest file this search can "
                               f"reach ({smallest} bytes: every layer at {SPARSITY_LEVELS[-1] * 100:.0f} % sparsity "
                               f"and the smallest storage); allowed: >= {smallest}")


def _fit_seeds(space: SearchSpace, points: list[SearchPoint], max_size_bytes, max_drop, ex,
               ref: str) -> list[tuple[dict, str]]:
    """``fit_budget`` fits (pruning, calibration curves) at the file sizes the uniform seeds reached, at the size
    bound and at the drop bound, as trial parameters. The curves are swept once and the fits run as tasks, both on
    the executor (in parallel on Ray)."""
    budgets: list[dict] = []
    for p in points:
        s = next(iter(p.settings["sparsity"].values()), None)
        if p.origin == "uniform" and p.error is None and s in FIT_SEEDS:
            budgets.append({"max_size_bytes": int(p.size_bytes)})
    if max_size_bytes is not None:
        budgets.append({"max_size_bytes": int(max_size_bytes)})
    if max_drop is not None:
        budgets.append({"max_accuracy_drop": float(max_drop)})
    if not budgets:
        return []
    curves = sweep_on(ex, ref, "prune", levels=SPARSITY_LEVELS, include_classifier=space.include_classifier,
                      heads=False).model_dump(mode="json")
    payloads = [{"config": {**b, "include_classifier": space.include_classifier}, "curves": curves} for b in budgets]
    out: list[tuple[dict, str]] = []
    for r in ex.run("fit", ref, payloads):
        if "error" in r:
            continue  # e.g. a size bound pruning alone cannot reach: the search may still reach it with a method
        params = space.params_for(r["choice"])
        if all(params != q for q, _ in out):
            out.append((params, "fit_budget"))
    return out


__all__ = ["METHODS", "OBJECTIVES", "SPARSITY_LEVELS", "SearchPoint", "SearchResult", "SearchSpace", "build_space",
           "evaluate_recipe", "make_recipe", "pareto_front", "search", "shipped_size"]
