"""Per-layer sensitivity analysis: calibration accuracy when ONE layer alone is pruned (or quantized, or factorised to
a lower rank) to each level.

Why: layers differ widely in how much compression they tolerate; the curves show where to spend a size budget
(Han et al. 2015 "Learning both Weights and Connections"; Distiller's sensitivity analysis; Michel et al. 2019
"Are Sixteen Heads Really Better than One?" for the per-head importance of the ViT).

How it stays fast (a full pruning sweep of digits-cnn or mnist-lenet300 takes well under a second):
- ONE private working copy of the model (never the caller's); for each point the layer's weight is swapped in
  place (masked by the prune family's magnitude importance + torch.nn.utils.prune's L1 masking, or fake-quantized
  by the quantize family's ``fake_quantize_weight``, per-channel symmetric as ``fake_quant``'s default, or replaced by
  the weight its low-rank factors compute with, ``low_rank_weight``: the factorised layer's exact function) and
  restored afterwards: no deepcopy per point.
- The whole calibration split is evaluated as ONE batch under ``torch.no_grad``; a right-padded token batch (a
  tokenizer's output) as a few groups of similar length, each cut to its longest row (``length_groups``: about half
  the positions on minilm-topics), when the grouped baseline outputs equal one whole-batch forward's within float
  rounding (the model ignores padding); otherwise whole.
- For ``nn.Sequential`` models (all sample models but the ViT and the LSTM) the input of every top-level child is
  computed once and cached, and each point runs only the suffix from the changed layer on. Other models run the
  full forward (still one batch), with the recorded outputs of the blocks that end before the changed layer
  replayed (``prefix_cache.BlockPrefix``: transformer layers, CNN stages), so only the rest runs. The suffix of a Sequential is exactly what its forward runs, so a layer at 0 %
  sparsity gives exactly the baseline accuracy.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Literal

import torch
from pydantic import BaseModel
from torch import nn

from . import inputs as I
from .errors import CompressionError
from .io import fold_masks
from .linear_like import is_conv1d
from .targets import classifier_name
from .prune.importance import weight_scores
from .prune.magnitude_cut import CutL1Unstructured
from .prune.lowrank import RANK_LEVELS, factorizable, layer_types as lowrank_types, low_rank_weight
from .length_groups import assemble, length_groups, same_outputs
from .prefix_cache import MAX_BYTES, BlockPrefix
from .prune.probes import head_accuracy_drop
from .quantize._common import fake_quantize_weight
from .targets import resolve_targets
from .technique import StepContext, clone_model
from .graph import build_graph
from .workload import resolve_workload

PRUNE_LEVELS: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
QUANT_LEVELS: tuple[int, ...] = (8, 7, 6, 5, 4, 3, 2)
Technique = Literal["prune", "quantize"]  # what the budget fit and the dashboard's Sensitivity page take today
Sweep = Literal["prune", "quantize", "lowrank"]  # every sweep sensitivity() runs (lowrank: levels are rank ratios)
PARALLEL_MAX_BYTES = 256 * 2**20  # a sweep on several threads holds one working copy of the model per thread
AUTO_HEADS = 16  # head importance costs one evaluation per head: automatic only for small models
EVALUATION = ("one working copy, weights swapped in place and restored; the whole calibration split in one batch "
              "under torch.no_grad; nn.Sequential models cache each layer's input and run only the suffix; other "
              "models replay the recorded outputs of the blocks before the changed layer")


class LayerCurve(BaseModel):
    """One layer's sensitivity: ``points`` = [(sparsity fraction, bits or rank ratio, calibration accuracy 0..1), ...]
    (a rank ratio at which the layer's factors would not be smaller leaves it as ``lowrank`` does: unchanged)."""

    name: str
    type: str
    params: int  # weights the technique acts on (the weight tensor(s), not the bias)
    points: list[tuple[int | float, float]]  # bits stay ints


class HeadImportance(BaseModel):
    """Calibration accuracy of the ViT when one attention head alone is removed (its value rows zeroed)."""

    layer: str
    head: int
    accuracy: float
    accuracy_drop: float


class Sensitivity(BaseModel):
    """The result of ``sensitivity``: baseline and per-layer curves on the calibration split (typed data)."""

    model: str
    technique: Sweep
    split: str = "calib"
    samples: int
    baseline_accuracy: float
    metric: str = "accuracy"  # what baseline_accuracy and the curves' values are
    higher_is_better: bool = True  # False: perplexity, a loss (a curve then rises as the layer is compressed)
    percent: bool = True  # a fraction shown in %
    include_classifier: bool
    layers: list[LayerCurve]
    heads: list[HeadImportance] | None = None
    seconds: float
    evaluation: str = EVALUATION

    def to_json_dict(self) -> dict:
        d = self.model_dump()
        d["layers"] = [{**c, "points": [list(p) for p in c["points"]]} for c in d["layers"]]
        if d["heads"] is None:
            del d["heads"]
        return d

    def curve(self, name: str) -> LayerCurve:
        for c in self.layers:
            if c.name == name:
                return c
        raise CompressionError(f"layer: {name!r} is not in the sensitivity result; layers: "
                               f"{', '.join(c.name for c in self.layers)}")


# ------------------------------------------------------------------------------------------------ evaluation
class Evaluator:
    """The calibration metric of a private working copy, one batch under no_grad, with Sequential prefix caching
    (only for a plain ``nn.Sequential`` forward: a subclass with its own ``forward`` is always run whole)."""

    def __init__(self, model: nn.Module, x, y: torch.Tensor, metric=None) -> None:
        self.model, self.x, self.y = model, x, y
        self.metric = metric
        plain = isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward
        self.children = list(model.children()) if plain and not I.is_dict(x) else None
        self.names = [n for n, _ in model.named_children()] if self.children is not None else []
        self._inputs: list[torch.Tensor] = []
        # any other model: block outputs recorded once, replayed for the blocks before the changed layer; a padded
        # token batch as length groups (one recording each) when that gives the same outputs
        self.parts = self._length_parts(model, x) if self.children is None else None
        self.prefix = BlockPrefix(model, x) if self.children is None and self.parts is None else None
        if self.children is not None:  # cached NOW, from the unchanged weights
            with torch.no_grad():
                h = I.cast_floats(x, I.input_dtype(model))
                for m in self.children:
                    self._inputs.append(h)  # the input of child i, (B, ...)
                    h = m(h)

    @staticmethod
    @torch.no_grad()
    def _length_parts(model: nn.Module, x) -> list[tuple[torch.Tensor, object, BlockPrefix]] | None:
        """[(row indices, their inputs cut to length, their recorded blocks)] when ``x`` is a padded token batch and
        the grouped outputs equal one whole-batch forward's (checked here, once); else None."""
        groups = length_groups(x)
        if groups is None:
            return None
        positions = x["attention_mask"].numel()
        prefixes = [BlockPrefix(model, gx, max_bytes=MAX_BYTES * gx["attention_mask"].numel() // positions)
                    for _, gx in groups]  # the whole batch's memory bound, shared by position count
        was = model.training
        model.eval()
        try:
            whole = I.call(model, x)
        finally:
            model.train(was)
        if not same_outputs(groups, [p.reference for p in prefixes], whole):
            return None
        return [(idx, gx, p) for (idx, gx), p in zip(groups, prefixes)]

    def _score(self, out: torch.Tensor) -> float:
        if self.metric is not None:
            return float(self.metric(out.float(), self.y))
        return int((out.argmax(-1) == self.y).sum()) / len(self.y)

    @torch.no_grad()
    def accuracy(self, changed: str | None = None) -> float:
        """The metric with the current weights; ``changed`` names the only layer altered since construction (the
        cached inputs of the layers before it are reused)."""
        if self.parts is not None:
            was = self.model.training
            self.model.eval()
            outs = []
            for _, gx, prefix in self.parts:
                with prefix.skip_before(changed):
                    outs.append(I.call(self.model, gx))  # (rows of the group, classes)
            self.model.train(was)
            out = assemble([(idx, gx) for idx, gx, _ in self.parts], outs)
        elif self.children is None or changed is None:
            was = self.model.training
            self.model.eval()
            if self.prefix is not None and changed is not None:
                with self.prefix.skip_before(changed):
                    out = I.call(self.model, self.x)  # (B, classes), the blocks before ``changed`` replayed
            else:
                out = I.call(self.model, self.x)  # (B, classes)
            self.model.train(was)
        else:
            i = self.names.index(changed.split(".")[0])
            out = self._inputs[i]
            for m in self.children[i:]:
                out = m(out)  # the suffix only
            out = I.as_logits(out)
        return self._score(out)


def _weights(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The weight tensors a technique acts on: ``weight`` (Linear/Conv2d) or every ``weight_*`` of an LSTM."""
    if isinstance(module, nn.LSTM):
        return [(n, p) for n, p in module.named_parameters(recurse=False) if n.startswith("weight")]
    return [("weight", module.weight)]


def prune_mask(weight: torch.Tensor, amount: float) -> torch.Tensor:
    """The 0/1 mask magnitude pruning at ``amount`` puts on ``weight``: the prune family's L1 importance, masked by
    torch.nn.utils.prune's L1Unstructured (``round(amount * n)`` smallest zeroed), exactly as ``prune`` does."""
    scores = weight_scores(weight.detach(), "l1")
    return CutL1Unstructured(amount=amount).compute_mask(scores, torch.ones_like(weight))


def layer_names(model: nn.Module, technique: Sweep, classifier: str | None, include_classifier: bool = False,
                targets: list[str] | None = None, ignore: tuple[str, ...] | list[str] = ()) -> list[str]:
    """The layers a sweep covers: Linear/Conv2d (plus LSTM for quantize; for lowrank those it can factorise),
    classifier left alone by default."""
    types: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d) + ((nn.LSTM,) if technique == "quantize" else ())
    if technique == "lowrank":
        types = lowrank_types(model)
    names = resolve_targets(model, targets, list(ignore), types, classifier, include_classifier)
    if technique == "lowrank":
        names = factorizable(model, names)
    if not names:
        raise CompressionError("targets: no layer selected for the sensitivity sweep; check targets, ignore and "
                               "include_classifier")
    return names


def _check_levels(technique: str, levels) -> tuple:
    if technique == "prune":
        levels = tuple(float(v) for v in (levels if levels is not None else PRUNE_LEVELS))
        bad = [v for v in levels if not 0 <= v < 1]
        if bad:
            raise CompressionError(f"levels: sparsities must be in [0, 1), got {bad[0]}")
    elif technique == "quantize":
        levels = tuple(int(v) for v in (levels if levels is not None else QUANT_LEVELS))
        bad = [v for v in levels if not 2 <= v <= 16]
        if bad:
            raise CompressionError(f"levels: bits must be 2..16, got {bad[0]}")
    elif technique == "lowrank":
        levels = tuple(float(v) for v in (levels if levels is not None else RANK_LEVELS))
        bad = [v for v in levels if not 0 < v <= 1]
        if bad:
            raise CompressionError(f"levels: rank ratios must be in (0, 1], got {bad[0]}")
    else:
        raise CompressionError(f"technique: must be 'prune', 'quantize' or 'lowrank', got {technique!r}")
    if not levels:
        raise CompressionError("levels: give at least one level")
    return levels


def sensitivity(
    model: nn.Module,
    data,
    technique: Sweep = "prune",
    levels=None,
    targets: list[str] | None = None,
    ignore: tuple[str, ...] | list[str] = (),
    include_classifier: bool = False,
    heads: bool | None = None,
    name: str = "model",
    progress=None,
    threads: int | None = 1,
    workers: int = 1,
) -> Sensitivity:
    """Calibration accuracy with each selected layer alone pruned to each sparsity (or fake-quantized to each bit
    width); ``data`` is the Workload (its ``calib`` split and metric are used). The input is never modified.

    ``heads``: for models with attention, also each head's importance (accuracy when it alone is removed), from the
    prune family's ``head_accuracy_drop`` (None: only when the model has at most AUTO_HEADS heads in all). ``threads``: intra-op threads for the
    sweep (default 1: on this shared 2-core machine the ViT sweep takes 0.4 s on 1 thread and 6 s on 2; None
    leaves torch's setting alone). ``workers``: layers swept on this many threads at once, each with
    its own working copy and ``threads`` intra-op threads (the same points, bit for bit, as one thread: each layer is
    scored exactly as alone; only for models of at most PARALLEL_MAX_BYTES, ``sweep_workers``).
    """
    levels = _check_levels(technique, levels)
    calib = getattr(data, "calib", None)
    if calib is None or len(calib) == 0:
        raise CompressionError("data: sensitivity needs the workload's calibration split (calib)")
    with intra_op_threads(threads):
        return _sweep(model, data, technique, levels, targets, ignore, include_classifier, heads, name, progress,
                      workers, threads)


@contextmanager
def intra_op_threads(threads: int | None):
    """Run a block with ``threads`` intra-op threads (None: unchanged), restoring torch's setting afterwards."""
    old = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _layer_curve(work: nn.Module, ev: Evaluator, lname: str, technique: str, levels: tuple, base: float) -> LayerCurve:
    """One layer's points: its weight(s) swapped in place in ``work`` at each level, scored by ``ev``, restored."""
    module = work.get_submodule(lname)
    tensors = _weights(module)
    saved = [t.detach().clone() for _, t in tensors]
    points = []
    try:
        for level in levels:
            with torch.no_grad():
                for (_, t), orig in zip(tensors, saved):
                    if technique == "prune":
                        t.copy_(orig * prune_mask(orig, level))
                    elif technique == "lowrank":
                        t.copy_(orig)
                        new = low_rank_weight(module, level)  # None: the layer would not shrink, lowrank leaves it
                        if new is not None:
                            t.copy_(new)
                    elif is_conv1d(module):  # weight (in, out): one scale per output, as fake_quant does
                        t.copy_(fake_quantize_weight(orig.float().t(), int(level), per_channel=True)[0].t())
                    else:
                        t.copy_(fake_quantize_weight(orig.float(), int(level), per_channel=True)[0])
            unchanged = technique == "prune" and level == 0  # mask of ones: exactly the baseline
            points.append((level, base if unchanged else ev.accuracy(lname)))
    finally:
        with torch.no_grad():
            for (_, t), orig in zip(tensors, saved):
                t.copy_(orig)
    return LayerCurve(name=lname, type=type(module).__name__, params=sum(t.numel() for _, t in tensors),
                      points=points)


def sweep_workers(model: nn.Module, workers: int) -> int:
    """How many evaluation threads a sweep of ``model`` runs on when ``workers`` are asked for: each holds its own
    working copy, so only a model of at most PARALLEL_MAX_BYTES gets more than one."""
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return max(1, int(workers)) if size <= PARALLEL_MAX_BYTES else 1


def _curves(model, work, ev, names, technique, levels, base, workers, threads, data, progress) -> list[LayerCurve]:
    """Every layer's curve, on ``workers`` threads (see ``sensitivity``); in the order of ``names``."""
    n = min(sweep_workers(work, workers), len(names))
    out: list[LayerCurve | None] = [None] * len(names)
    lock = threading.Lock()
    done = [0]

    def report(lname: str) -> None:
        with lock:
            done[0] += 1
            if progress is not None:
                progress(done[0] / len(names), f"{lname}: {len(levels)} levels")

    calib = data.calib
    pairs = [(work, ev)]
    for _ in range(n - 1):  # one more private working copy (and its recorded inputs) per extra thread
        w = fold_masks(clone_model(model)).eval()
        pairs.append((w, Evaluator(w, calib.x, calib.y, getattr(data, "metric", None))))
    todo = iter(range(len(names)))
    errors: list[BaseException] = []

    def run(w: nn.Module, e: Evaluator) -> None:
        with intra_op_threads(threads):  # a new thread starts with torch's default, not the caller's setting
            while not errors:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                try:
                    out[i] = _layer_curve(w, e, names[i], technique, levels, base)
                    report(names[i])
                except BaseException as exc:  # noqa: BLE001  (re-raised in the calling thread)
                    errors.append(exc)

    pool = [threading.Thread(target=run, args=pair, daemon=True) for pair in pairs[1:]]  # none for one worker
    for t in pool:
        t.start()
    run(*pairs[0])  # the calling thread sweeps too
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return out  # type: ignore[return-value]


def _sweep(model, data, technique, levels, targets, ignore, include_classifier, heads, name, progress, workers=1,
           threads=1):
    calib = data.calib
    t0 = time.perf_counter()
    ctx = StepContext(data=data)
    work = fold_masks(clone_model(model)).eval()  # the ONE private working copy
    names = layer_names(work, technique, classifier_name(work, ctx), include_classifier, targets, ignore)
    ev = Evaluator(work, calib.x, calib.y, getattr(data, "metric", None))
    base = ev.accuracy()
    curves = _curves(model, work, ev, names, technique, levels, base, workers, threads, data, progress)
    head_rows = None
    if heads is not False and technique == "prune":
        try:  # every attention the traced graph finds (hand-written, Hugging Face, nn.MultiheadAttention)
            total = sum(g.size for g in build_graph(work, I.head(calib.x, 4), probe=False).units("heads").values())
            wanted = total > 0 and (heads is True or total <= AUTO_HEADS)
            per_head = head_accuracy_drop(work, calib.x, calib.y) if wanted else {}
        except CompressionError:
            per_head = {}
        head_rows = [] if per_head else None
        for layer, drops in per_head.items():
            for h, drop in enumerate(drops):
                head_rows.append(HeadImportance(layer=layer, head=h, accuracy=round(base - drop, 10),
                                                accuracy_drop=round(drop, 10)))
    metric = getattr(data, "metric", None)
    return Sensitivity(model=name, technique=technique, samples=len(calib), baseline_accuracy=base,
                       metric=str(getattr(metric, "name", "accuracy")),
                       higher_is_better=bool(getattr(metric, "higher_is_better", True)),
                       percent=bool(getattr(metric, "percent", True)),
                       include_classifier=include_classifier, layers=curves, heads=head_rows,
                       seconds=time.perf_counter() - t0)


def workload_sensitivity(ref, technique: Sweep = "prune", **kw) -> Sensitivity:
    """``sensitivity`` of a workload given by reference (a registered name, file.py:attr or module:attr)."""
    wl = resolve_workload(ref)
    return sensitivity(wl.model, wl, technique, name=wl.name, **kw)


sample_sensitivity = workload_sensitivity  # the older name


__all__ = ["EVALUATION", "Evaluator", "HeadImportance", "LayerCurve", "PRUNE_LEVELS", "QUANT_LEVELS", "Sensitivity",
           "Sweep", "layer_names", "prune_mask", "sweep_workers", "sample_sensitivity", "sensitivity", "workload_sensitivity"]
