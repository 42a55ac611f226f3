"""Budget fitting: per-layer sparsity (or bits) picked from the sensitivity curves to meet a size or accuracy target.

Why: a uniform setting over-compresses fragile layers and under-compresses robust ones; spending the budget where
the curves say it is cheapest keeps more accuracy at the same file size (Distiller's sensitivity-driven schedules;
He et al. 2018 "AMC" for the per-layer idea).

Greedy on the convex hull of each layer's curve: repeatedly take the move (one layer to any higher level) with the
least predicted accuracy loss per byte saved, where a layer's predicted loss is the monotone envelope of its
single-layer drop on the calibration split. The result is then checked for real (the real file size, the real joint
calibration accuracy) and corrected (more moves if the file is still too big, moves undone if the joint drop is
too large), so a fit always meets its budget.

Direction: a lower-is-better metric (perplexity, a loss) is handled in its own units: a layer's loss is the metric's
RISE in percent of the baseline (``workload.metric_loss``), so ``max_accuracy_drop=5`` on a perplexity workload
means "perplexity at most 5 % above the baseline" (on an accuracy workload: at most 5 points below it).

Sizes: pruning counts the sparse-encoded file (``compression_core.sparse.sparse_size_bytes``: dense, bitmask or CSR
per tensor, whichever is smallest); quantize uses simulated (fake-quant) bits and counts the THEORETICAL size
(bits x params / 8 summed over every layer, as ``measure``'s ``theoretical_size_bytes``), not a real packed file.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, Field, ValidationError, model_validator
from torch import nn

from .errors import CompressionError
from .inputs import predict
from .measure import layer_stats, size_bytes
from .io import fold_masks
from .targets import classifier_name
from .prune.lowrank import LowRankConfig, low_rank_weight, plan_layer
from .prune.unstructured import UnstructuredPruneConfig, prune_unstructured, select_layers
from .quantize.fakequant import FakeQuantConfig
from .sensitivity import Evaluator, intra_op_threads, QUANT_LEVELS, Sensitivity, prune_mask, sensitivity
from .sparse import sparse_size_bytes
from .technique import StepConfig, StepContext, apply_step, clone_model, register, TechniqueUI
from .quantize._common import fake_quantize_weight
from .recipe import apply_recipe, load_recipe, recipe_class, recipe_to_dict
from .workload import better, loss_unit, metric_loss, metric_up, top1

FLOAT_BITS = 32
# 0, 0.025, .., 0.95: a finer grid than 5% lets the fit spend the budget (on lenet300 the 5% grid left ~5 KB unused
# and lost to uniform at one budget; 2.5% wins at all three, at ~2x the fit time)
FIT_PRUNE_LEVELS: tuple[float, ...] = tuple(round(i * 0.025, 3) for i in range(39))
# rank ratios the fit picks from (finer than sensitivity's 1.0/0.75/0.5/0.25/0.1 display grid)
FIT_RANK_LEVELS: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2, 0.15, 0.1, 0.05)


class FitBudgetConfig(StepConfig):
    """Fit per-layer sparsity (``technique="prune"``), bits (``"quantize"``) or rank ratios (``"lowrank"``) to ONE
    target: the file at most ``max_size_bytes`` (sparse-encoded for prune, theoretical for quantize, the dense file
    for lowrank) or at most ``max_accuracy_drop`` lost on the calibration split: percentage points for a
    higher-is-better metric, percent of the baseline for a lower-is-better one (perplexity +5 % is 5). The classifier
    is left alone unless ``include_classifier``."""

    kind: Literal["fit_budget"] = "fit_budget"
    ui = TechniqueUI(family="prune", label="fit per-layer settings to a budget", hidden=True, storage="sparse",
                     order=95)
    technique: Literal["prune", "quantize", "lowrank"] = "prune"
    max_size_bytes: int | None = Field(default=None, gt=0, description="file size target in bytes")
    max_accuracy_drop: float | None = Field(default=None, ge=0, le=100,
                                            description="calibration metric loss target: percentage points, or "
                                                        "percent rise for a lower-is-better metric (perplexity)")
    targets: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    include_classifier: bool = False

    @model_validator(mode="after")
    def _one_target(self):
        if (self.max_size_bytes is None) == (self.max_accuracy_drop is None):
            raise ValueError("max_size_bytes / max_accuracy_drop: give exactly one budget target")
        return self


def budget_config(spec: FitBudgetConfig | dict | None = None, **fields) -> FitBudgetConfig:
    """A FitBudgetConfig from a config, a dict or keyword fields; bad fields are a one-line CompressionError."""
    if isinstance(spec, FitBudgetConfig) and not fields:
        return spec
    data = {**(spec.model_dump() if isinstance(spec, FitBudgetConfig) else (spec or {})), **fields}
    try:
        return FitBudgetConfig(**data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "fit_budget"
        msg = str(err.get("ctx", {}).get("error", err["msg"])).removeprefix("Value error, ")
        if err["type"] == "value_error":
            raise CompressionError(msg) from None
        raise CompressionError(f"{field}: {msg}, got {err.get('input')!r}") from None


class BudgetFit(BaseModel):
    """What a fit chose and what it measured (calibration split; size as the file the technique would ship)."""

    technique: Literal["prune", "quantize", "lowrank"]
    target: dict
    metric: str = "accuracy"
    higher_is_better: bool = True  # False: perplexity; every drop below is then a rise in % of the baseline
    drop_unit: str = "points"  # what the *_drop_points fields count in: "points" or "% rise"
    choice: dict[str, float]  # layer -> sparsity (prune), bits (quantize; 32 = float) or rank ratio (1 = as is)
    include_classifier: bool
    baseline_accuracy: float  # calibration
    accuracy: float  # calibration, all layers compressed together
    predicted_drop_points: float  # from the single-layer curves, summed
    baseline_size_bytes: int
    size_bytes: int
    size_kind: Literal["sparse", "theoretical", "dense"]
    min_size_bytes: int
    # the same choice on the test split (the fit sees only calibration data): metric before/after, both drops in
    # points, and one line when the two splits disagree by more than one test item's worth or 1 point
    calibration_drop_points: float | None = None
    test_baseline_accuracy: float | None = None
    test_accuracy: float | None = None
    test_drop_points: float | None = None
    split_note: str | None = None

    def step(self) -> StepConfig | None:
        """The explicit per-layer step this fit resolves to (a normal prune_unstructured / fake_quant step); None
        when a quantize fit keeps every layer float (the budget needs no compression)."""
        return explicit_step(self.technique, self.choice, self.include_classifier)


def explicit_step(technique: str, choice: dict[str, float], include_classifier: bool) -> StepConfig | None:
    """Per-layer overrides as a normal step: every chosen layer is listed (0 sparsity too, so replayed bundles get
    the same masks); for quantize only the layers given fewer than 32 bits are targeted."""
    if technique == "lowrank":  # the fit offers only levels at which the layer's factors are smaller
        ranks = {k: float(v) for k, v in choice.items() if v < 1}
        return LowRankConfig(targets=tuple(ranks), overrides=ranks, include_classifier=include_classifier) \
            if ranks else None
    if technique == "prune":
        return UnstructuredPruneConfig(amount=0.0, scope="layer", targets=list(choice), include_classifier=include_classifier,
                                       overrides={k: float(v) for k, v in choice.items()})
    quant = {k: int(v) for k, v in choice.items() if v < FLOAT_BITS}
    if not quant:
        return None
    return FakeQuantConfig(bits=max(quant.values()), targets=tuple(quant), include_classifier=include_classifier,
                           overrides=quant)


# ------------------------------------------------------------------------------------------------ fitting
def _losses(points: list[tuple[float, float]], base: float, metric=None) -> list[float]:
    """Predicted loss per level (``metric_loss``: points, or % rise for a lower-is-better metric), from the
    single-layer drop: never negative and made non-decreasing with the level by taking, at each level, the smallest
    drop at that level or beyond (a dip in the middle of a curve that later levels do not show is calibration
    noise, not a real cost)."""
    drops = [max(0.0, metric_loss(metric, base, acc)) for _, acc in points]
    out, low = [], float("inf")
    for d in reversed(drops):
        low = min(low, d)
        out.append(low)
    return out[::-1]


class _Fitter:
    """The working copy, its options per layer (level, predicted loss, bytes) and the real checks."""

    def __init__(self, model: nn.Module, data, cfg: FitBudgetConfig, curves: Sensitivity | None) -> None:
        self.cfg, self.data, self.model = cfg, data, model
        self.work = fold_masks(clone_model(model)).eval()
        self.ctx = ctx = StepContext(data=data)
        self.classifier = classifier_name(self.work, ctx)
        if curves is None or curves.technique != cfg.technique:
            levels = {"prune": FIT_PRUNE_LEVELS, "lowrank": FIT_RANK_LEVELS}.get(cfg.technique)  # finer grids
            curves = sensitivity(self.work, data, cfg.technique, targets=cfg.targets, ignore=cfg.ignore,
                                 include_classifier=cfg.include_classifier, heads=False, levels=levels)
        self.curves = curves
        self.metric = getattr(data, "metric", None)
        self.base = curves.baseline_accuracy
        self.names = [c.name for c in curves.layers]
        self.ev = Evaluator(self.work, data.calib.x, data.calib.y, getattr(data, "metric", None))
        self.saved = {n: [t.detach().clone() for t in self._tensors(n)] for n in self.names}
        self._cache: dict[tuple[str, float], list[torch.Tensor]] = {}  # (layer, level) -> compressed weights
        self.levels: dict[str, list[float]] = {}
        self.loss: dict[str, list[float]] = {}
        self.bytes: dict[str, list[int]] = {}
        if cfg.technique == "prune":
            self.kind = "sparse"
            self.base_size = self._size({})
            for c in curves.layers:
                pts = [p for p in c.points if p[0] > 0]
                self.levels[c.name] = [0.0] + [p[0] for p in pts]
                self.loss[c.name] = _losses([(0.0, self.base)] + pts, self.base, self.metric)
                # bytes of the whole file with this layer alone at each level (the others dense): additive estimate
                self.bytes[c.name] = [self.base_size] + [self._size({c.name: p[0]}) for p in pts]
        elif cfg.technique == "lowrank":
            self.kind = "dense"
            self.base_size = size_bytes(self.work)
            for c in curves.layers:
                m = self.work.get_submodule(c.name)
                plans = [(p, plan_layer(c.name, m, ratio=p[0])) for p in sorted(c.points, key=lambda p: -p[0])]
                pts = [(p, pl) for p, pl in plans if p[0] < 1 and pl.shrinks]  # only levels that shrink the layer
                self.levels[c.name] = [1.0] + [p[0] for p, _ in pts]
                self.loss[c.name] = _losses([(1.0, self.base)] + [p for p, _ in pts], self.base, self.metric)
                # the weights the factors save, in the layer's dtype (the real file also has each factor's framing)
                item = m.weight.element_size()
                self.bytes[c.name] = [self.base_size] + [self.base_size - item * (pl.before - pl.after)
                                                         for _, pl in pts]
        else:
            self.kind = "theoretical"
            rows = {r.name: r for r in layer_stats(self.work)}
            self.total_bits = sum(r.bits * r.params for r in layer_stats(self.work))
            self.base_size = self.total_bits // 8
            for c in curves.layers:
                r = rows[c.name]
                pts = sorted(c.points, key=lambda p: -p[0])  # 8 bits first
                self.levels[c.name] = [float(FLOAT_BITS)] + [p[0] for p in pts]
                self.loss[c.name] = _losses([(FLOAT_BITS, self.base)] + pts, self.base, self.metric)
                self.bytes[c.name] = [self.base_size] + [(self.total_bits - (r.bits - int(b)) * r.params) // 8
                                                         for b, _ in pts]
        self.min_size = self.real_size({n: self.levels[n][-1] for n in self.names})

    def _tensors(self, name: str) -> list[torch.Tensor]:
        m = self.work.get_submodule(name)
        if isinstance(m, nn.LSTM):
            return [p for n, p in m.named_parameters(recurse=False) if n.startswith("weight")]
        return [m.weight]

    @torch.no_grad()
    def _set(self, choice: dict[str, float]) -> None:
        """Put the working copy in the state ``choice`` describes (unlisted layers restored)."""
        for n in self.names:
            level = choice.get(n)
            if level is None or (self.cfg.technique == "prune" and level == 0) or level >= FLOAT_BITS or \
                    (self.cfg.technique == "lowrank" and level >= 1):
                new = self.saved[n]
            else:
                new = self._cache.get((n, level))
                if new is None:
                    if self.cfg.technique == "prune":
                        new = [orig * prune_mask(orig, level) for orig in self.saved[n]]
                    elif self.cfg.technique == "lowrank":  # what the factors compute, from the original weight
                        self._tensors(n)[0].copy_(self.saved[n][0])
                        w = low_rank_weight(self.work.get_submodule(n), level)
                        new = [w if w is not None else self.saved[n][0]]
                    else:
                        new = [fake_quantize_weight(orig.float(), int(level), per_channel=True)[0]
                               for orig in self.saved[n]]
                    self._cache[(n, level)] = new
            for t, w in zip(self._tensors(n), new):
                t.copy_(w)

    def _size(self, choice: dict[str, float]) -> int:
        self._set(choice)
        try:
            return sparse_size_bytes(self.work)
        finally:
            self._set({})

    def real_size(self, choice: dict[str, float]) -> int:
        """The size of exactly what the explicit step produces (prune: the step applied to the input model, then
        sparse-encoded; quantize: the theoretical size measure reports; lowrank: the step applied, its file)."""
        if self.cfg.technique == "lowrank":
            step = explicit_step("lowrank", choice, self.cfg.include_classifier)
            return size_bytes(self.model if step is None else apply_step(self.model, step, self.ctx))
        if self.cfg.technique == "prune":
            step = explicit_step("prune", choice, self.cfg.include_classifier)
            return sparse_size_bytes(apply_step(self.model, step, self.ctx))
        bits = self.total_bits
        rows = {r.name: r for r in layer_stats(self.work)}
        for n, b in choice.items():
            if b < FLOAT_BITS:
                bits -= (rows[n].bits - int(b)) * rows[n].params
        return bits // 8

    def real_accuracy(self, choice: dict[str, float]) -> float:
        self._set(choice)
        try:
            return self.ev.accuracy()
        finally:
            self._set({})

    def predicted(self, idx: dict[str, int]) -> tuple[int, float]:
        size = self.base_size + sum(self.bytes[n][i] - self.base_size for n, i in idx.items())
        return size, sum(self.loss[n][i] for n, i in idx.items())

    def moves(self, idx: dict[str, int]):
        """(d_loss, d_bytes saved, layer, new index) of every move of one layer to a higher level."""
        for n in self.names:
            i = idx[n]
            for j in range(i + 1, len(self.levels[n])):
                saved = self.bytes[n][i] - self.bytes[n][j]
                if saved > 0:
                    yield self.loss[n][j] - self.loss[n][i], saved, n, j

    def choice(self, idx: dict[str, int]) -> dict[str, float]:
        return {n: self.levels[n][i] for n, i in idx.items()}


def _greedy_step(f: _Fitter, idx: dict[str, int], need: int | None, allowance: float | None):
    """The next move: the least loss per byte saved (a move that alone reaches ``need`` bytes and costs no more
    than the greedy move is preferred); under an accuracy allowance, only moves that fit in it."""
    cands = list(f.moves(idx))
    if allowance is not None:
        cands = [c for c in cands if c[0] <= allowance + 1e-9]
    if not cands:
        return None
    best = min(cands, key=lambda c: (c[0] / c[1], -c[1]))
    if need is not None:
        finishing = [c for c in cands if c[1] >= need]
        if finishing:
            cheap = min(finishing, key=lambda c: (c[0], c[1]))
            if cheap[0] <= best[0]:
                return cheap
    return best


def _relax(f: _Fitter, idx: dict[str, int], budget: int) -> None:
    """Refine with the REAL joint calibration accuracy (the curves assume layers do not interact, and the last
    greedy move may overshoot on coarse levels): repeatedly take the best of "move one layer to a lower level"
    and "move one layer down and another up" whose predicted file fits the budget, if all layers compressed
    together classify more calibration samples correctly; stop when nothing improves (local optimum)."""
    current = f.real_accuracy(f.choice(idx))
    for _ in range(50):
        best = None
        for n in f.names:
            for j in range(idx[n]):  # n relaxed to level j, alone or with one other layer compressed more
                trial = {**idx, n: j}
                cands = [trial] + [{**trial, m: k} for m in f.names if m != n
                                   for k in range(idx[m] + 1, len(f.levels[m]))]
                for c in cands:
                    if f.predicted(c)[0] > budget:
                        continue
                    acc = f.real_accuracy(f.choice(c))
                    key = (acc if metric_up(f.metric) else -acc, -f.predicted(c)[1])
                    if better(f.metric, acc, current) and (best is None or key > best[0]):
                        best = (key, c)
        if best is None or f.real_size(f.choice(best[1])) > budget:
            return
        idx.update(best[1])
        current = best[0][0] if metric_up(f.metric) else -best[0][0]


def fit_budget(model: nn.Module, data, cfg: FitBudgetConfig | dict,
               curves: Sensitivity | None = None, threads: int | None = 1) -> BudgetFit:
    """Pick per-layer sparsity/bits for ``cfg``'s target from the sensitivity curves (computed on ``data.calib``
    unless ``curves`` are given) and check the result for real. The input model is never modified.
    ``threads``: intra-op threads while fitting (default 1, fastest on these tiny models; None: unchanged)."""
    with intra_op_threads(threads):
        return _fit(model, data, budget_config(cfg), curves)


def _fit(model: nn.Module, data, cfg: FitBudgetConfig, curves: Sensitivity | None) -> BudgetFit:
    if data is None or getattr(data, "calib", None) is None:
        raise CompressionError("data: fit_budget needs the workload's calibration split (calib)")
    f = _Fitter(model, data, cfg, curves)
    idx = {n: 0 for n in f.names}
    what = {"prune": "sparse-encoded", "lowrank": "dense file"}.get(cfg.technique,
                                                                    "theoretical (simulated bits x params)")
    if cfg.max_size_bytes is not None:
        budget = cfg.max_size_bytes
        if budget < f.min_size:
            top = {"prune": "95 % sparsity", "lowrank": f"rank ratio {min(FIT_RANK_LEVELS)} where it shrinks"}.get(
                cfg.technique, f"{min(QUANT_LEVELS)} bits")
            raise CompressionError(f"max_size_bytes: {budget} is smaller than the smallest reachable {what} size "
                                   f"{f.min_size} bytes (every selected layer at {top}); allowed: >= {f.min_size}")
        target = budget
        for _ in range(1000):
            while f.predicted(idx)[0] > target:
                move = _greedy_step(f, idx, f.predicted(idx)[0] - target, None)
                if move is None:
                    break
                idx[move[2]] = move[3]
            real = f.real_size(f.choice(idx))
            if real <= budget:
                break
            target = f.predicted(idx)[0] - (real - budget)  # the estimate was short by this much: ask for more
            if all(i == len(f.levels[n]) - 1 for n, i in idx.items()):
                break
        _relax(f, idx, budget)
    else:
        allowance = cfg.max_accuracy_drop
        history = []
        while True:
            move = _greedy_step(f, idx, None, allowance - f.predicted(idx)[1])
            if move is None:
                break
            history.append((move[2], idx[move[2]]))
            idx[move[2]] = move[3]
        while history and metric_loss(f.metric, f.base, f.real_accuracy(f.choice(idx))) > allowance + 1e-9:
            n, old = history.pop()  # the joint drop is larger than the curves predicted: undo the latest move
            idx[n] = old
    choice = f.choice(idx)
    size = f.real_size(choice)
    if cfg.max_size_bytes is not None and size > cfg.max_size_bytes:  # pragma: no cover - min_size was checked
        raise CompressionError(f"max_size_bytes: could not reach {cfg.max_size_bytes} bytes (got {size})")
    target = ({"max_size_bytes": cfg.max_size_bytes} if cfg.max_size_bytes is not None
              else {"max_accuracy_drop": cfg.max_accuracy_drop})
    accuracy = f.real_accuracy(choice)
    return BudgetFit(technique=cfg.technique, target=target, metric=str(getattr(f.metric, "name", "accuracy")),
                     higher_is_better=metric_up(f.metric), drop_unit=loss_unit(f.metric), choice=choice,
                     include_classifier=cfg.include_classifier,
                     baseline_accuracy=f.base, accuracy=accuracy,
                     predicted_drop_points=round(f.predicted(idx)[1], 6), baseline_size_bytes=f.base_size,
                     size_bytes=size, size_kind=f.kind, min_size_bytes=f.min_size,
                     **_on_test_split(f, cfg, choice, accuracy))


def _on_test_split(f: _Fitter, cfg: FitBudgetConfig, choice: dict[str, float], accuracy: float) -> dict:
    """The fit's choice applied to the input model and scored on the test split beside the calibration drop, and a
    line when the two drops differ by more than one test item's worth (or 1 point, whichever is larger)."""
    data = f.data
    test = getattr(data, "test", None)
    calib_drop = metric_loss(f.metric, f.base, accuracy)
    unit = loss_unit(f.metric)
    if test is None or getattr(test, "y", None) is None:
        return {"calibration_drop_points": calib_drop}
    step = explicit_step(cfg.technique, choice, cfg.include_classifier)
    fitted = f.model if step is None else apply_step(f.model, step, f.ctx)
    metric = getattr(data, "metric", None)
    score = metric if callable(metric) else top1
    base = float(score(predict(f.model, test.x), test.y))
    after = float(score(predict(fitted, test.x), test.y))
    test_drop = metric_loss(f.metric, base, after)
    out = {"calibration_drop_points": calib_drop, "test_baseline_accuracy": base, "test_accuracy": after,
           "test_drop_points": test_drop}
    n_test, n_calib = len(test.y), len(data.calib.y) if data.calib.y is not None else len(data.calib)
    if abs(test_drop - calib_drop) > max(1.0, 100.0 / max(n_test, 1)):
        line = (f"the fit loses {calib_drop:.2f} {unit} on the calibration split ({n_calib} items) but "
                f"{test_drop:.2f} on the test split ({n_test} items)")
        if cfg.max_accuracy_drop is not None and test_drop > cfg.max_accuracy_drop:
            line += (f": the {cfg.max_accuracy_drop:g} {unit} budget is met on calibration and missed on test by "
                     f"{test_drop - cfg.max_accuracy_drop:.2f} {unit}; ask for a smaller max_accuracy_drop or give "
                     "the workload a larger calibration split")
        else:
            line += "; the fit sees only the calibration split: the test figure is the one to expect"
        out["split_note"] = line
    return out


@register(FitBudgetConfig)
def _fit_budget_step(model: nn.Module, cfg: FitBudgetConfig, ctx: StepContext) -> nn.Module:
    """Fit, then apply the explicit per-layer step. In replay (bundle reload) pruning only rebuilds the masks of
    every selected layer (the saved state_dict brings the values); quantize and lowrank refit on the calibration
    split (the same input gives the same choice, so the same shapes)."""
    if ctx.replay and cfg.technique == "prune":
        chosen = UnstructuredPruneConfig(targets=cfg.targets, ignore=cfg.ignore, include_classifier=cfg.include_classifier)
        names = select_layers(model, chosen, ctx)
        return prune_unstructured(model, explicit_step("prune", {n: 0.0 for n in names}, cfg.include_classifier), ctx)
    ctx.report(0.0, "sensitivity sweep on the calibration split")
    fit = fit_budget(model, ctx.data, cfg)
    ctx.report(0.8, f"fitted: {fit.size_bytes} bytes ({fit.size_kind}), calib {fit.metric} {fit.accuracy:.4f}")
    if fit.split_note:
        ctx.note(fit.split_note)
    step = fit.step()
    return model if step is None else apply_step(model, step, ctx)


def explicit_recipe(recipe, progress=None):
    """The recipe with every ``fit_budget`` step replaced by the explicit per-layer step it resolves to (so it can
    be exported and re-applied without refitting). Steps before a fit are applied to find the model it sees."""
    recipe = load_recipe(recipe)
    data = recipe_to_dict(recipe)
    wl = recipe.workload()
    steps = list(recipe.steps)
    for i, cfg in enumerate(steps):
        if not isinstance(cfg, FitBudgetConfig):
            continue
        before = {**data, "steps": data["steps"][:i]}
        model = (apply_recipe(before, with_latency=False, measure_before=False, measure_after=False,
                              workload=wl).model if i else wl.model)
        try:
            fit = fit_budget(model, wl, cfg)
            step = fit.step()
        except CompressionError as e:
            raise CompressionError(f"steps[{i}].{e}") from None
        data["steps"][i] = step.model_dump(mode="json") if step is not None else None
        if progress is not None:
            progress((i + 1) / len(steps), f"step {i}: fitted")
    data["steps"] = [s for s in data["steps"] if s is not None]
    out = recipe_class().model_validate(data)
    out._base_dir = recipe.base_dir  # relative workload references keep resolving
    return out


def fitted_recipe(model_name: str, fit: BudgetFit, seed: int = 0):
    """A one-step explicit recipe for a fit on the workload ``model_name`` references (what the dashboard exports)."""
    step = fit.step()
    return recipe_class().model_validate({"version": 1, "model": model_name, "seed": seed,
                                          "steps": [step.model_dump(mode="json")] if step is not None else []})


__all__ = ["BudgetFit", "FitBudgetConfig", "budget_config", "explicit_recipe", "explicit_step", "fit_budget",
           "fitted_recipe"]
