"""Method guidance: which quantization method to use for a sample model, backed by numbers measured on it.

The rule of thumb (PyTorch's quantization guide; Jacob et al. 2018; Krishnamoorthi 2018): recurrent and
transformer models (and MLPs: Linear layers only) -> dynamic int8, since their cost is in weight matrices and their
activations vary per input; CNNs -> static int8, since convolutions are compute-bound and calibrated activation
ranges let whole conv-BN-ReLU regions run in integers; a CNN whose static accuracy drop exceeds
``max_drop_pt`` -> quantization-aware training. The rule only picks the first candidate: every candidate is run on
the model and measured (test accuracy, serialized size, latency at batch 32 on 1 thread, ratios against fp32 in the
same run), and a method whose measured drop is over the threshold is never recommended.
"""

from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import BaseModel, Field
from torch import nn

from .errors import CompressionError
from .graph import attention_heads
from .linear_like import conv1d_names
from .cost import estimate_cost
from .measure import evaluate, latency, size_bytes
from .prune.common import is_attention
from .quantize import DynamicInt8Config, QATConfig, StaticInt8Config, quantize
from . import inputs as I
from .workload import metric_loss, metric_up, resolve_workload

ModelType = Literal["recurrent", "transformer", "cnn", "mlp"]


class Candidate(BaseModel):
    """One measured method: accuracy, size and batch-32 latency, with ratios against fp32 from the same run."""

    method: str  # quantize kind, or "fp32"
    label: str
    accuracy: float
    drop_pt: float  # accuracy points lost against fp32
    size_bytes: int
    size_ratio: float
    latency_ms: float
    latency_ratio: float
    within_threshold: bool
    seconds: float  # time to quantize (calibrate / train)


class Advice(BaseModel):
    """The recommendation for one model and the measurements it rests on."""

    model: str
    model_type: ModelType
    rule: str  # the method the model type suggests first
    recommended: str  # a quantize kind, or "none" (keep fp32: no candidate within the threshold)
    reason: str
    max_drop_pt: float
    batch_size: int
    threads: int
    baseline: Candidate
    candidates: list[Candidate] = Field(default_factory=list)
    skipped: dict[str, str] = Field(default_factory=dict)  # method -> why the library refused it for this model
    metric: str = "accuracy"  # the workload's metric (Candidate.accuracy holds its value)
    higher_is_better: bool = True  # False (perplexity): drop_pt is the metric's rise in % of fp32

    def candidate(self, method: str) -> Candidate | None:
        return next((c for c in self.candidates if c.method == method), None)

    def to_json_dict(self) -> dict:
        return self.model_dump(mode="json")


def model_type(model: nn.Module, example=None) -> ModelType:
    """recurrent (LSTM/GRU/RNN), transformer (attention), cnn (Conv2d) or mlp (Linear only).

    With ``example`` (a batch of the model's inputs), attention heads found by running it count too: a Hugging
    Face BERT (MiniLM) or GPT-2 (its projections are transformers' Conv1D, not nn.Linear) has none of the
    hand-written attention modules and was called an MLP. Heads are looked for only in a model with embeddings or
    layer norms and no convolution (the others are decided by their modules), with ``graph.attention_heads`` (no
    Torch-Pruning trace: a model it cannot follow is still recognised by its heads)."""
    mods = list(model.modules())
    if any(isinstance(m, nn.RNNBase) for m in mods):
        return "recurrent"
    if any(is_attention(m) or isinstance(m, nn.MultiheadAttention) for m in mods):
        return "transformer"
    if any(isinstance(m, nn.Conv2d) for m in mods):
        return "cnn"
    if example is not None and any(isinstance(m, (nn.Embedding, nn.LayerNorm, nn.RMSNorm)) for m in mods):
        try:
            if attention_heads(model, example):
                return "transformer"
        except Exception:  # a model that cannot be run so: its modules decided above, an MLP otherwise
            pass
    return "mlp"


_LABELS = {"quantize_dynamic": "dynamic int8", "quantize_static": "static int8", "quantize_qat": "QAT int8"}


def _config(method: str, qat_epochs: int):
    return {"quantize_dynamic": DynamicInt8Config(), "quantize_static": StaticInt8Config(),
            "quantize_qat": QATConfig(epochs=qat_epochs)}[method]


def _size(wl, steps: list, built: nn.Module) -> int:
    """The file size of the workload's model after ``steps``, computed by ``estimate_cost`` (the function Explore's
    size numbers come from, so the two pages agree to the byte); measured on ``built`` only when it cannot be
    computed."""
    c = estimate_cost(wl.model, steps, wl)
    return c.size_bytes if c.size_bytes is not None else size_bytes(built)


def advise(name, max_drop_pt: float = 1.0, qat_epochs: int = 2, batch_size: int = 32, threads: int = 1,
           min_run_time: float = 0.1) -> Advice:
    """Measure the candidate methods on the workload ``name`` (a reference or a Workload) and recommend one.

    Candidates: dynamic and static int8 always; QAT for a CNN whose static drop is over ``max_drop_pt``.
    """
    if max_drop_pt < 0:
        raise CompressionError(f"max_drop_pt: must be >= 0, got {max_drop_pt}")
    wl = resolve_workload(name)
    name = wl.name
    example = I.head(wl.test.x, batch_size)
    kind = model_type(wl.model, I.head(wl.test.x, 2))
    rule = "quantize_static" if kind == "cnn" else "quantize_dynamic"
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        base_acc = evaluate(wl.model, wl)
        base_size = _size(wl, [], wl.model)
        base_ms = latency(wl.model, example, threads=threads, min_run_time=min_run_time)[0]

        def run(method: str) -> Candidate:
            t0 = time.perf_counter()
            q = quantize(wl.model, _config(method, qat_epochs), wl)
            took = time.perf_counter() - t0
            acc = evaluate(q, wl)
            ms = latency(q, example, threads=threads, min_run_time=min_run_time)[0]
            drop = metric_loss(wl.metric, base_acc, acc)  # points; % rise for perplexity
            size = _size(wl, [_config(method, qat_epochs)], q)
            return Candidate(method=method, label=_LABELS[method], accuracy=acc, drop_pt=drop,
                             size_bytes=size, size_ratio=size / base_size, latency_ms=ms,
                             latency_ratio=ms / base_ms, within_threshold=drop <= max_drop_pt, seconds=took)

        skipped: dict[str, str] = {}

        def attempt(method: str) -> list[Candidate]:
            """The candidate measured, or none when the library refuses the method for this model (dynamic int8 of
            a CNN whose only Linear is its small classifier: the file would not shrink); the refusal is kept."""
            try:
                return [run(method)]
            except CompressionError as e:
                skipped[method] = " ".join(str(e).split())
                return []

        cands = attempt("quantize_dynamic") + attempt("quantize_static")
        by = {c.method: c for c in cands}
        if kind == "cnn" and (by.get("quantize_static") is None or not by["quantize_static"].within_threshold) \
                and "quantize_static" not in skipped and wl.train is not None:
            cands += attempt("quantize_qat")
            by.update({c.method: c for c in cands})
    finally:
        torch.set_num_threads(old)
    base = Candidate(method="fp32", label="fp32", accuracy=base_acc, drop_pt=0.0, size_bytes=base_size,
                     size_ratio=1.0, latency_ms=base_ms, latency_ratio=1.0, within_threshold=True, seconds=0.0)
    order = [rule] + (["quantize_qat"] if kind == "cnn" else []) + [m for m in by if m != rule]
    chosen = next((m for m in order if m in by and by[m].within_threshold), "none")
    r = by.get(rule)
    if not cands:
        raise CompressionError(f"{name}: no quantization method applies: " + "; ".join(
            f"{_LABELS[m]}: {why}" for m, why in skipped.items()))
    lin = "Linear/Conv1D" if conv1d_names(wl.model) else "Linear"  # GPT-2's projections are transformers' Conv1D
    why = {"recurrent": "a recurrent model: its cost is in the LSTM/Linear weight matrices and its activations "
                        "change with every input, so dynamic int8 (no calibration) fits",
           "transformer": "a transformer: LayerNorm, softmax and GELU stay float, so static int8 only wraps single "
                          f"{lin} layers; dynamic int8 quantizes every {lin} with no calibration",
           "mlp": "Linear layers only: dynamic int8 quantizes their weights with no calibration",
           "cnn": "a CNN: calibrated static int8 runs whole conv-BN-ReLU regions in integer arithmetic"}[kind]
    pt = "pt" if metric_up(wl.metric) else f"% {wl.metric.name} rise"
    if r is None:  # the rule's method was refused: say so before the alternative
        why += f", but {_LABELS[rule]} does not apply to it ({skipped[rule][:160]})"
    if chosen == rule:
        word = "drop " if metric_up(wl.metric) else ""  # "+0.03 % perplexity rise" needs no "drop"
        reason = f"{why}; measured {word}{r.drop_pt:+.2f} {pt} <= {max_drop_pt:g} {pt}"
    elif chosen == "quantize_qat":
        reason = (f"{why}, but static int8 lost {r.drop_pt:.2f} {pt} (> {max_drop_pt:g}); QAT ({qat_epochs} "
                  f"epochs) lost {by['quantize_qat'].drop_pt:+.2f} {pt}")
    elif chosen != "none" and r is None:
        reason = f"{why}; {_LABELS[chosen]} lost {by[chosen].drop_pt:+.2f} {pt} <= {max_drop_pt:g} {pt}"
    elif chosen != "none":
        reason = (f"{why}, but {_LABELS[rule]} lost {r.drop_pt:.2f} {pt} (> {max_drop_pt:g}); "
                  f"{_LABELS[chosen]} lost {by[chosen].drop_pt:+.2f} {pt}")
    else:
        reason = (f"every measured method lost more than {max_drop_pt:g} accuracy points: keep fp32"
                  if metric_up(wl.metric) else f"every measured method lost more than {max_drop_pt:g} {pt}: keep fp32")
    return Advice(model=name, model_type=kind, rule=rule, recommended=chosen, reason=reason, max_drop_pt=max_drop_pt,
                  batch_size=batch_size, threads=threads, baseline=base, candidates=cands, skipped=skipped,
                  metric=wl.metric.name, higher_is_better=metric_up(wl.metric))


def render_advice(a: Advice) -> str:
    """The advice and its measured candidates as a text table."""
    lines = [f"model            {a.model} ({a.model_type})",
             f"recommended      {_LABELS.get(a.recommended, a.recommended)} ({a.recommended})",
             f"why              {a.reason}",
             f"measured         test {a.metric}{'' if a.higher_is_better else ' (lower is better)'}; size = "
             f"serialized state_dict; latency batch {a.batch_size}, {a.threads} thread(s), median, ratio vs fp32 in "
             "the same run",
             "",
             f"{'method':<14}{a.metric[:10]:>10}{'drop (pt)' if a.higher_is_better else 'rise (%)':>11}{'size (B)':>11}"
             f"{'size x':>8}{'ms':>9}{'lat x':>8}  ok"]
    for c in [a.baseline] + a.candidates:
        lines.append(f"{c.label:<14}{c.accuracy:>10.4f}{c.drop_pt:>11.2f}{c.size_bytes:>11,}{c.size_ratio:>8.3f}"
                     f"{c.latency_ms:>9.3f}{c.latency_ratio:>8.3f}  {'yes' if c.within_threshold else 'no'}")
    lines += [f"{_LABELS.get(m, m):<14}not applicable: {why}" for m, why in a.skipped.items()]
    return "\n".join(lines)


__all__ = ["Advice", "Candidate", "advise", "model_type", "render_advice"]
