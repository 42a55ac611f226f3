"""Generality: every registered technique x every model of the zoo of foreign architectures (tests/zoo.py).

    python -m benchmarks.generality [--json] [--models resnet,gru] [--techniques prune_unstructured,quantize_half]

Each cell is one of
  works    the technique ran and a PROPERTY of its result was checked (listed below the matrix: real sparsity in the
           weights the model ships and computes with, shrunk == masked to 1e-5 with fewer parameters, a file really
           smaller for real quantization, the metric within a stated bound of the baseline, the output shape kept)
  refused  a one-line CompressionError naming the field or layer and the reason (shown)
  error    any other exception, a multi-line or unnamed refusal, or a property that does not hold: a bug.
Every cell also checks that the input model is unchanged and that ``measure`` runs on the result (and, for float
results, counts exactly ``sum(p.numel() for p in model.parameters())`` parameters and the true non-zeros).

Techniques come from ``compression_core.technique.registered_configs()``: a kind with no entry in VARIANTS below runs
with its default config and the generic checks, so a technique added later appears here with no edit. One thread.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from pydantic import ValidationError
from torch import nn

from compression_core import CompressionError, measure, predict, shippable_state_dict, size_bytes
from compression_core.technique import StepConfig, StepContext, apply_step, registered_configs

from .common import emit, environment, parser

ZOO_FILE = Path(__file__).resolve().parent.parent / "tests" / "zoo.py"

WORKS, REFUSED, ERROR = "works", "refused", "error"


class PropertyFailed(AssertionError):
    """The technique ran but its result is wrong (a silently wrong number)."""


# --------------------------------------------------------------------------------------------------- variants
@dataclass(frozen=True)
class Variant:
    """One row of the matrix: a technique (``kind``) with a config (``steps``: applied in order), the property
    ``check`` verifies and the metric ``bound`` (points of the metric it may lose; None: not checked)."""

    label: str
    kind: str
    steps: tuple[StepConfig, ...]
    check: str
    bound: float | None = None
    float_result: bool = True  # the result is a plain float model: measure's parameter count is checked exactly


def _kinds() -> dict[str, type[StepConfig]]:
    return {c.model_fields["kind"].default: c for c in registered_configs()}


def cfg(kind: str, **fields) -> StepConfig:
    """The registered config of ``kind`` with ``fields`` (looked up by kind, so a moved class needs no edit here)."""
    return _kinds()[kind](**fields)


def _rows(kind: str, *rows: tuple) -> tuple[Variant, ...]:
    """Variants of ``kind``: (label, [(kind, fields), ...], check, bound, float_result) each."""
    out = []
    for label, steps, check_name, *rest in rows:
        out.append(Variant(label, kind, tuple(cfg(k, **f) for k, f in steps), check_name, *rest))
    return tuple(out)


def _variants_by_kind() -> dict[str, tuple[Variant, ...]]:
    """kind -> its rows: configs small enough to run in about a second on the zoo (1 epoch, 1 round)."""
    s50 = {"amount": 0.5}
    table = {
        "prune_unstructured": [("prune_unstructured 50%", [("prune_unstructured", s50)], "unstructured")],
        "prune_threshold": [("prune_threshold 0.5 std", [("prune_threshold", {"threshold": 0.5, "scale": "std"})],
                             "threshold")],
        "prune_structured": [(f"prune_structured {u} 50%", [("prune_structured", {**s50, "unit": u})], "masked")
                             for u in ("channels", "neurons", "heads")],
        "shrink": [(f"shrink after {u} 50%", [("prune_structured", {**s50, "unit": u}), ("shrink", {})], "shrink")
                   for u in ("channels", "neurons", "heads")],
        "prune_layers": [("prune_layers 1 block", [("prune_layers", {"count": 1})], "fewer_params")],
        "lottery_ticket": [("lottery_ticket 1 round", [("lottery_ticket", {"rate": 0.2, "rounds": 1, "epochs": 1})],
                            "lottery")],
        "network_slimming": [("network_slimming 50%", [("network_slimming", {**s50, "epochs": 1})],
                              "fewer_params")],
        "lowrank": [("lowrank rank 50%", [("lowrank", {"rank_ratio": 0.5})], "fewer_params")],
        "fit_budget": [("fit_budget prune, drop <= 2 pts",
                        [("fit_budget", {"technique": "prune", "max_accuracy_drop": 2.0})], "budget")],
        "quantize_dynamic": [("quantize_dynamic int8", [("quantize_dynamic", {})], "smaller", 3.0, False)],
        "quantize_static": [("quantize_static int8", [("quantize_static", {})], "smaller", 5.0, False)],
        "quantize_qat": [("quantize_qat 1 epoch", [("quantize_qat", {"epochs": 1})], "smaller", 5.0, False)],
        "quantize_int4": [("quantize_int4", [("quantize_int4", {})], "smaller", 5.0, False)],
        "quantize_embedding": [("quantize_embedding int8", [("quantize_embedding", {})], "smaller", 3.0, False)],
        "quantize_weight_only": [("quantize_weight_only int4 gptq", [("quantize_weight_only", {"method": "gptq"})],
                                  "smaller", 5.0, False),
                                 ("quantize_weight_only int3 awq",
                                  [("quantize_weight_only", {"bits": 3, "method": "awq"})], "smaller", 10.0, False)],
        "quantize_half": [("quantize_half fp16", [("quantize_half", {"dtype": "fp16"})], "half", 1.0),
                          ("quantize_half bf16", [("quantize_half", {"dtype": "bf16"})], "half", 3.0)],
        "fake_quant": [("fake_quant 8 bit", [("fake_quant", {"bits": 8})], "simulated", 3.0, False)],
        "finetune": [("finetune 1 epoch", [("finetune", {"epochs": 1})], "trained", 5.0)],
        "distill": [("distill from itself 1 epoch", [("distill", {"epochs": 1})], "trained", 5.0)],
        "reinit": [("reinit", [("reinit", {})], "reinit")],
    }
    known = _kinds()
    return {kind: _rows(kind, *rows) for kind, rows in table.items()
            if all(k in known for _, steps, *_ in rows for k, _ in steps)}


VARIANTS: dict[str, tuple[Variant, ...]] = _variants_by_kind()
# kinds whose config cannot be built without arguments only a person can choose (none today); listed, not run
NEEDS_ARGUMENTS: dict[str, str] = {}

CHECKS = {
    "unstructured": "each masked layer ships >= 50% zeros; outputs == the model rebuilt from its shipped weights",
    "threshold": "every shipped non-zero weight of a masked layer has |w| >= 0.5 std; outputs == rebuilt from shipped",
    "masked": "whole units zeroed (more zeros shipped); outputs == the model rebuilt from its shipped weights",
    "shrink": "shrunk == masked to 1e-5 (max |diff| / max |out|); fewer parameters",
    "fewer_params": "fewer parameters; output shape kept",
    "lottery": "each masked layer ships >= 20% zeros; outputs == rebuilt from shipped weights",
    "budget": "calibration metric drop <= 2 points (+1 sample); outputs == rebuilt from shipped weights",
    "smaller": "file (torch.save of the state_dict) smaller than fp32; metric within the bound",
    "half": "every float tensor in fp16/bf16 (half the float bytes), file smaller; metric within the bound",
    "simulated": "measure reports simulated bits and a theoretical size < the fp32 file; metric within the bound",
    "trained": "same parameter count; metric within the bound",
    "reinit": "same parameter count, weights changed",
    "generic": "output shape kept; measure runs",
}


def variants() -> list[Variant]:
    """The matrix rows: every registered technique's VARIANTS, or its default config for a kind not listed."""
    rows: list[Variant] = []
    for cls in registered_configs():
        kind = cls.model_fields["kind"].default
        if kind in VARIANTS:
            rows += VARIANTS[kind]
        elif kind in NEEDS_ARGUMENTS:
            continue
        else:
            try:
                cfg = cls()
            except ValidationError as e:
                raise RuntimeError(f"benchmarks.generality: the new technique {kind!r} has no default config "
                                   f"({e.errors()[0]['msg']}); add it to VARIANTS or NEEDS_ARGUMENTS") from None
            rows.append(Variant(kind, kind, (cfg,), "generic"))
    return rows


# ------------------------------------------------------------------------------------------------------- zoo
def load_zoo():
    """tests/zoo.py as the module ``zoo`` (the one the tests import, if they already did)."""
    mod = sys.modules.get("zoo")
    if mod is not None and Path(getattr(mod, "__file__", "")).resolve() == ZOO_FILE:
        return mod
    spec = importlib.util.spec_from_file_location("zoo", ZOO_FILE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["zoo"] = mod
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    technique: str
    model: str
    status: str
    detail: str
    seconds: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)


WORKLOAD_FIELDS = ("model", "data", "train", "calib", "test", "classifier", "metric", "workload", "teacher")


def is_named_refusal(message: str, cfg: StepConfig | None = None, model: nn.Module | None = None) -> bool:
    """One line, ``<field or layer>: <reason>``: what a refusal must look like. With ``cfg`` and ``model``, the
    head must be one of the config's fields, a workload field or a layer of the model."""
    head, sep, reason = message.partition(": ")
    if not message or "\n" in message.strip() or not sep or not head.strip() or not reason.strip():
        return False
    if cfg is None:
        return True
    head = head.strip()
    fields = set(type(cfg).model_fields) | set(WORKLOAD_FIELDS)
    layers = {n for n, _ in model.named_modules()} if model is not None else set()
    return head in fields or head.split(".")[0] in fields or head in layers


_BASE: dict[int, tuple[float, torch.Tensor, int]] = {}


def baseline(wl) -> tuple[float, torch.Tensor, int]:
    """(metric, test outputs, file bytes) of the workload's uncompressed model, once per workload."""
    key = id(wl)
    if key not in _BASE:
        _BASE[key] = (wl.score(wl.model), predict(wl.model, wl.test.x), size_bytes(wl.model))
    return _BASE[key]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _mask_owners(model: nn.Module) -> dict[str, nn.Module]:
    """Modules holding a torch.nn.utils.prune mask on ``weight``."""
    return {n: m for n, m in model.named_modules() if hasattr(m, "weight_mask")}


def _param_keys(model: nn.Module) -> list[str]:
    """state_dict keys of the parameters, with a pruning reparametrisation named by its effective weight."""
    buffers = {n for n, _ in model.named_buffers()}
    out = []
    for n, _ in model.named_parameters():
        if n.endswith("_orig") and n[:-5] + "_mask" in buffers:
            n = n[:-5]
        out.append(n)
    return out


def shipped_zeros(model: nn.Module) -> tuple[int, int]:
    """(zero parameters, parameters) in the state_dict the model ships (masks folded)."""
    state = shippable_state_dict(model)
    ts = [state[k] for k in _param_keys(model) if k in state]
    return sum(int((t == 0).sum()) for t in ts), sum(t.numel() for t in ts)


def _max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) / max(1.0, float(b.float().abs().max()))


def _rebuilt_matches(base: nn.Module, out: nn.Module, wl) -> float:
    """Load the pruned model's shipped state_dict into a copy of the base architecture and compare outputs: the
    model computes with exactly the weights it reports and ships."""
    fresh = copy.deepcopy(base)
    try:
        fresh.load_state_dict(shippable_state_dict(out), strict=True)
    except RuntimeError as e:
        raise PropertyFailed(f"the shipped state_dict does not load into the architecture: {str(e).splitlines()[0]}")
    d = _max_rel_diff(predict(out, wl.test.x), predict(fresh, wl.test.x))
    if d > 1e-5:
        raise PropertyFailed(f"outputs differ from the model rebuilt from its shipped weights by {d:.2e}: the model "
                             "computes with weights other than those it ships (a mask not applied in forward)")
    return d


def _metric_within(wl, model: nn.Module, base_metric: float, bound: float, numbers: dict) -> str:
    """The metric may lose at most ``bound`` points (a fraction metric), or, lower being better (perplexity), rise
    by at most ``bound`` percent."""
    m = wl.score(model)
    numbers.update(metric=m, baseline=base_metric)
    if not getattr(wl.metric, "higher_is_better", True):
        if m > base_metric * (1 + bound / 100.0) + 1e-9:
            raise PropertyFailed(f"{wl.metric.name} {base_metric:.4f} -> {m:.4f}, more than {bound:g} % higher")
    elif m < base_metric - bound / 100.0 - 1e-9:
        raise PropertyFailed(f"{wl.metric.name} {base_metric:.4f} -> {m:.4f}, more than {bound:g} points lost")
    return f"{wl.metric.name} {base_metric:.4f} -> {m:.4f}"


def check(variant: Variant, wl, models: list[nn.Module], numbers: dict) -> str:
    """Verify the variant's property on its result (``models``: one per step); raise PropertyFailed if it fails.
    Returns what was measured, in words."""
    base = wl.model
    out = models[-1]
    base_metric, base_out, base_bytes = baseline(wl)
    try:
        y = predict(out, wl.test.x)
    except Exception as e:  # noqa: BLE001
        raise PropertyFailed(f"the result's forward fails on the test inputs ({type(e).__name__}: {_first_line(e)})")
    if tuple(y.shape) != tuple(base_out.shape):
        raise PropertyFailed(f"output shape {tuple(base_out.shape)} -> {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        raise PropertyFailed("non-finite outputs")
    stats = measure(out, wl, with_latency=False)
    if stats.metric != wl.metric.name:
        raise PropertyFailed(f"measure names the metric {stats.metric!r}, the workload's is {wl.metric.name!r}")
    if variant.float_result:
        true = n_params(out)
        zeros, _ = shipped_zeros(out)
        if stats.params != true:
            raise PropertyFailed(f"measure counts {stats.params} parameters, the model has {true}")
        if stats.nonzero_params != true - zeros:
            raise PropertyFailed(f"measure counts {stats.nonzero_params} non-zeros, the shipped weights have "
                                 f"{true - zeros}")
    numbers.update(params=n_params(out), base_params=n_params(base), bytes=stats.size_bytes, base_bytes=base_bytes)
    kind = variant.check
    if kind in ("unstructured", "lottery", "threshold", "masked", "budget"):
        owners = _mask_owners(out)
        z0, _ = shipped_zeros(base)
        z1, total = shipped_zeros(out)
        numbers.update(sparsity=z1 / total)
        if z1 <= z0 and kind != "budget":
            raise PropertyFailed(f"no weight zeroed ({z0} zeros before, {z1} after)")
        state = shippable_state_dict(out)
        for name, m in owners.items():
            w = state[f"{name}.weight" if name else "weight"]
            zeros, n = int((w == 0).sum()), w.numel()
            asked = {"unstructured": 0.5, "lottery": 0.2}.get(kind)
            if asked is not None and zeros < int(asked * n):  # torch.nn.utils.prune zeroes round(amount * n)
                raise PropertyFailed(f"{name}: {zeros} of {n} weights zero shipped, {asked:.0%} asked")
            if kind == "threshold":
                t = 0.5 * float(base.get_submodule(name).weight.detach().std())
                small = ((w != 0) & (w.abs() < t - 1e-7)).sum()
                if small:
                    raise PropertyFailed(f"{name}: {int(small)} shipped weights below the threshold {t:.4f} kept")
        _rebuilt_matches(base, out, wl)
        text = f"{z1 / total:.1%} of the parameters zero (was {z0 / total:.1%}) in {len(owners)} masked layers"
        if kind == "budget":
            before, after = wl.score(base, "calib"), wl.score(out, "calib")
            slack = 1.0 / len(wl.calib) + 1e-9
            numbers.update(calib_before=before, calib_after=after)
            if getattr(wl.metric, "higher_is_better", True):
                if before - after > 0.02 + slack:
                    raise PropertyFailed(f"calibration {wl.metric.name} {before:.4f} -> {after:.4f}: more than the 2 "
                                         "points the budget allows")
            elif after > before * 1.02 + 1e-9:  # lower is better (perplexity): the budget is 2 % of it
                raise PropertyFailed(f"calibration {wl.metric.name} {before:.4f} -> {after:.4f}: more than the 2 % "
                                     "the budget allows")
            text += f"; calib {wl.metric.name} {before:.4f} -> {after:.4f}"
        return text
    if kind == "shrink":
        masked, shrunk = models[-2], out
        d = _max_rel_diff(predict(shrunk, wl.test.x), predict(masked, wl.test.x))
        numbers.update(max_diff=d)
        if d > 1e-5:
            raise PropertyFailed(f"shrunk differs from masked by {d:.2e} (> 1e-5)")
        if n_params(shrunk) >= n_params(base):
            raise PropertyFailed(f"not fewer parameters: {n_params(base)} -> {n_params(shrunk)}")
        return f"params {n_params(base)} -> {n_params(shrunk)} ({n_params(shrunk) / n_params(base):.2f}x), " \
               f"max diff {d:.1e}"
    if kind == "fewer_params":
        if n_params(out) >= n_params(base):
            raise PropertyFailed(f"not fewer parameters: {n_params(base)} -> {n_params(out)}")
        return f"params {n_params(base)} -> {n_params(out)}; {wl.metric.name} {base_metric:.4f} -> {wl.score(out):.4f}"
    if kind == "smaller":
        if stats.size_bytes >= base_bytes:
            raise PropertyFailed(f"file not smaller: {base_bytes} -> {stats.size_bytes} bytes")
        m = _metric_within(wl, out, base_metric, variant.bound, numbers)
        return f"file {stats.size_bytes / base_bytes:.2f}x; {m}"
    if kind == "half":
        want = variant.steps[-1].dtype
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}[want]
        wrong = [k for k, t in out.state_dict().items() if t.is_floating_point() and t.dtype != dtype]
        if wrong:
            raise PropertyFailed(f"{wrong[0]} stays {out.state_dict()[wrong[0]].dtype}")
        payload = sum(t.numel() * t.element_size() for t in out.state_dict().values() if t.is_floating_point())
        base_payload = sum(t.numel() * t.element_size() for t in base.state_dict().values() if t.is_floating_point())
        if stats.size_bytes >= base_bytes or payload * 2 != base_payload:
            raise PropertyFailed(f"file {stats.size_bytes / base_bytes:.2f}x of fp32, float payload "
                                 f"{payload} of {base_payload} bytes: not half")
        m = _metric_within(wl, out, base_metric, variant.bound, numbers)
        return f"file {stats.size_bytes / base_bytes:.2f}x; {m}"
    if kind == "simulated":
        if not stats.simulated or stats.theoretical_size_bytes is None:
            raise PropertyFailed("measure does not report the result as simulated")
        if stats.theoretical_size_bytes >= base_bytes:
            raise PropertyFailed(f"theoretical size {stats.theoretical_size_bytes} >= the fp32 file {base_bytes}")
        m = _metric_within(wl, out, base_metric, variant.bound, numbers)
        return f"theoretical {stats.theoretical_size_bytes / base_bytes:.2f}x; {m}"
    if kind == "trained":
        if n_params(out) != n_params(base):
            raise PropertyFailed(f"parameter count changed: {n_params(base)} -> {n_params(out)}")
        return _metric_within(wl, out, base_metric, variant.bound, numbers)
    if kind == "reinit":
        if n_params(out) != n_params(base):
            raise PropertyFailed(f"parameter count changed: {n_params(base)} -> {n_params(out)}")
        same = all(torch.equal(a, b) for a, b in zip(base.parameters(), out.parameters()))
        if same:
            raise PropertyFailed("no weight changed")
        return f"weights re-drawn; {wl.metric.name} {base_metric:.4f} -> {wl.score(out):.4f}"
    return f"output shape {tuple(y.shape)} kept; {wl.metric.name} {base_metric:.4f} -> {wl.score(out):.4f}"


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def run_cell(variant: Variant, model_name: str, wl) -> Cell:
    """Apply the variant's steps to the workload's model and classify the outcome (see the module docstring)."""
    baseline(wl)
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    t0 = time.perf_counter()
    numbers: dict[str, Any] = {}

    def cell(status: str, detail: str) -> Cell:
        return Cell(variant.label, model_name, status, detail, time.perf_counter() - t0, numbers)

    models: list[nn.Module] = []
    model = wl.model
    outcome: Cell | None = None
    try:
        for cfg in variant.steps:
            model = apply_step(model, cfg, StepContext(data=wl, seed=0))
            models.append(model)
    except CompressionError as e:
        msg = str(e).strip()
        if is_named_refusal(msg, cfg, model):
            outcome = cell(REFUSED, msg)
        else:
            outcome = cell(ERROR, f"a CompressionError that does not start with a field or layer in one line: {msg!r}")
    except Exception as e:  # noqa: BLE001  (any other exception is the finding)
        outcome = cell(ERROR, f"{type(e).__name__}: {_first_line(e)} (in {cfg.kind})")
    changed = [k for k, v in wl.model.state_dict().items() if k not in before or not torch.equal(v, before[k])]
    if changed:
        return cell(ERROR, f"the input model was modified ({changed[0]})")
    if outcome is not None:
        return outcome
    try:
        return cell(WORKS, check(variant, wl, models, numbers))
    except PropertyFailed as e:
        return cell(ERROR, f"wrong result: {e}")
    except Exception as e:  # noqa: BLE001
        return cell(ERROR, f"{type(e).__name__} measuring the result: {_first_line(e)}")


# ----------------------------------------------------------------------------------------------------- main
def run(models: list[str] | None = None, techniques: list[str] | None = None, progress=True) -> dict:
    torch.set_num_threads(1)
    zoo = load_zoo()
    names = [n for n in zoo.ZOO if models is None or n in models]
    rows = [v for v in variants() if techniques is None or v.kind in techniques or v.label in techniques]
    cells: list[Cell] = []
    total = len(names) * len(rows)
    for name in names:
        t0 = time.perf_counter()
        wl = zoo.ZOO[name]()
        if progress:
            print(f"{name}: trained in {time.perf_counter() - t0:.1f}s, {wl.metric.name} {baseline(wl)[0]:.4f}",
                  file=sys.stderr, flush=True)
        for v in rows:
            c = run_cell(v, name, wl)
            cells.append(c)
            if progress:
                print(f"[{len(cells)}/{total}] {v.label} x {name}: {c.status} ({c.seconds:.1f}s) {c.detail[:120]}",
                      file=sys.stderr, flush=True)
    return {"environment": environment(), "models": names, "techniques": [v.label for v in rows],
            "checks": {v.label: CHECKS[v.check] + (f" (bound {v.bound:g} points)" if v.bound is not None else "")
                       for v in rows},
            "needs_arguments": NEEDS_ARGUMENTS,
            "cells": [asdict(c) for c in cells]}


def markdown(result: dict) -> str:
    """The matrix as a Markdown table, then each refusal's reason and each error, then what was checked."""
    by = {(c["technique"], c["model"]): c for c in result["cells"]}
    models = result["models"]
    lines = ["| technique | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for t in result["techniques"]:
        marks = {WORKS: "works", REFUSED: "refused", ERROR: "**error**"}
        lines.append(f"| {t} | " + " | ".join(marks[by[(t, m)]["status"]] if (t, m) in by else "-"
                                              for m in models) + " |")
    counts = {s: sum(c["status"] == s for c in result["cells"]) for s in (WORKS, REFUSED, ERROR)}
    lines.append("")
    lines.append(f"{counts[WORKS]} works, {counts[REFUSED]} refused, {counts[ERROR]} errors "
                 f"({len(result['cells'])} cells).")
    for status, title in ((ERROR, "Errors (bugs)"), (REFUSED, "Refusals")):
        rows = [c for c in result["cells"] if c["status"] == status]
        if rows:
            lines += ["", f"{title}:", ""]
            lines += [f"- {c['technique']} x {c['model']}: {c['detail']}" for c in rows]
    lines += ["", "Checked when it works:", ""]
    lines += [f"- {t}: {what}" for t, what in result["checks"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", help="comma-separated zoo model names (default: all)")
    p.add_argument("--techniques", help="comma-separated kinds or row labels (default: every registered technique)")
    args = p.parse_args(argv)
    split = (lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None)
    result = run(split(args.models), split(args.techniques))
    emit(result, args.json, markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
