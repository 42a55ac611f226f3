"""Slower than fp32, and what is faster: every sample model (and, with --slow-case, a 4.65 M parameter
EfficientNet-Lite0-like CNN with explicit padding, ``examples/padded_cnn.py``) quantized to int8 in torch and run
through ``compression_core.faster.faster_path``: the model, fp32 and every other compressed path timed together.

    python -m benchmarks.slower [--json] [--models NAME ...] [--slow-case | --only-slow-case] [--batch-size 8]
                                [--rounds 5]

Per model: the torch int8 model's time as a multiple of fp32's (same run), the verdict, every compressed path's
ratio, size and agreement with fp32, and the one line the CLI and the dashboard print (it must name a faster path
whenever one is at or below fp32's time, or say none is). Static int8 where the model takes it, else dynamic.
1 thread; ratios, not milliseconds, are what to compare on a shared machine. Progress goes to stderr.
"""

from __future__ import annotations

import torch

import sample_models
from compression_core import resolve_workload
from compression_core.cpu import cpu_summary
from compression_core.errors import CompressionError
from compression_core.faster import PATHS, THIS_IN_ORT, faster_path
from compression_core.quantize import DynamicInt8Config, StaticInt8Config, quantize

from .common import emit, environment, parser, progress, table

SLOW_CASE = "examples/padded_cnn.py:workload"


def check(ref: str, batch_size: int = 8, rounds: int = 5) -> dict:
    """One model: torch static int8 (dynamic where static refuses) through ``faster_path``; the line and figures."""
    wl = resolve_workload(ref)
    progress(f"{wl.name}: quantizing in torch")
    try:
        model, label, step = quantize(wl.model, StaticInt8Config(), wl), "torch static int8", "quantize_static"
    except CompressionError:
        model, label, step = quantize(wl.model, DynamicInt8Config(), wl), "torch dynamic int8", "quantize_dynamic"
    recipe = {"version": 1, "model": ref, "steps": [{"kind": step}]}
    r = faster_path(wl, model, recipe=recipe, label=label, batch_size=batch_size, rounds=rounds,
                    paths=(THIS_IN_ORT, *PATHS),
                    progress=lambda f, m: progress(f"{wl.name}: {m}"))
    good = [p for p in r.paths if p.ratio <= 1 and (p.agreement is None or p.agreement >= r.bar)]
    named_ok = (r.faster is not None and r.faster.ratio == min(p.ratio for p in good)) if good else r.faster is None
    return {"model": wl.name, "params": sum(p.numel() for p in wl.model.parameters()), "method": label,
            "ratio": r.this.ratio, "size_ratio": r.this.size_ratio, "verdict": r.verdict,
            "faster": r.faster.path if r.faster else None, "faster_ratio": r.faster.ratio if r.faster else None,
            "fastest": r.paths[0].path if r.paths else None, "fastest_ratio": r.paths[0].ratio if r.paths else None,
            "line": r.line(), "summary": r.summary(), "named_fastest_ok": named_ok, "seconds": r.seconds,
            "paths": [p.model_dump() for p in [r.this, *r.paths]], "skipped": r.skipped}


def run(models: list[str] | None = None, slow_case: bool = False, batch_size: int = 8, rounds: int = 5) -> dict:
    torch.set_num_threads(1)
    refs = list(models if models is not None else (*sample_models.MODEL_NAMES, "minilm-topics"))
    refs += [SLOW_CASE] if slow_case else []
    out = [check(ref, batch_size, rounds) for ref in refs]
    env = environment() | {"cpu": cpu_summary(), "batch_size": batch_size, "rounds": rounds}
    return {"environment": env, "models": out}


def main(argv=None) -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--models", nargs="*", default=None, help="sample models (default: all, minilm-topics too)")
    p.add_argument("--slow-case", action="store_true", help="also the EfficientNet-Lite0-like padded CNN")
    p.add_argument("--only-slow-case", action="store_true", help="only the padded CNN")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args(argv)
    res = run([] if a.only_slow_case else a.models, a.slow_case or a.only_slow_case, a.batch_size, a.rounds)
    text = table(res["models"], [("model", "model", ""), ("method", "method", ""), ("ratio", "x fp32", ".2f"),
                                 ("verdict", "verdict", ""), ("faster", "faster path", ""),
                                 ("faster_ratio", "its x fp32", ".2f"), ("named_fastest_ok", "named ok", "")])
    text += "\n\n" + "\n".join(f"{m['model']}: {m['line'] or m['summary']}" for m in res["models"])
    emit(res, a.json, text)


if __name__ == "__main__":
    main()
