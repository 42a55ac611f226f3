"""Before-vs-after latency timed in the same run, interleaved, with its spread and an honest verdict.

Timing the baseline once and the compressed model minutes later compares two different machines (a shared CPU's
load changes from second to second): a 90%-masked CNN looked "0.50x, faster" that way while timed back to back it
was 1.05-1.18x (slower). Here both are timed in alternating blocks (A B B A A B ...), each block long enough to
dwarf the timer's own cost, and the ratio is taken per round, so a load change hits both sides of a round alike.
A ratio whose spread (the rounds' interquartile range) reaches into [1 - tolerance, 1 + tolerance] is reported as
"no measurable difference", never as faster or slower.

>>> c = compare_latency(before_model, after_model, example, threads=1)
>>> c.verdict, c.ratio, c.ratio_low, c.ratio_high
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from . import inputs as I

Verdict = Literal["faster", "slower", "no measurable difference"]
TOLERANCE = 0.03  # differences under 3 % are not worth a word even when they are real


class LatencyComparison(BaseModel):
    """Median per-call milliseconds of both sides, their spread over the rounds, and the after/before ratio."""

    model_config = ConfigDict(frozen=True)
    runtime: str = "torch"
    batch_size: int
    threads: int
    rounds: int
    calls_per_block: int
    before_ms: float
    before_low_ms: float  # 25th percentile of all calls
    before_high_ms: float  # 75th percentile of all calls
    after_ms: float
    after_low_ms: float
    after_high_ms: float
    ratio: float  # median over the rounds of after / before, fastest call of each block (below 1: faster)
    ratio_low: float  # 25th percentile of the per-round ratios
    ratio_high: float  # 75th percentile
    tolerance: float = TOLERANCE
    verdict: Verdict
    seconds: float  # wall time of the whole comparison

    def sentence(self) -> str:
        """``0.91x (0.88-0.95 over 9 rounds): faster`` in words a person reads."""
        spread = f"{self.ratio_low:.2f}-{self.ratio_high:.2f}x over {self.rounds} interleaved rounds"
        if self.verdict == "no measurable difference":
            return (f"{self.ratio:.2f}x ({spread}): no measurable difference; the ratio is within the timing noise "
                    f"or within {self.tolerance:.0%} of 1")
        return f"{self.ratio:.2f}x ({spread}): {self.verdict}"

    def to_json_dict(self) -> dict:
        return self.model_dump()


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], statistics.median(xs), q[2]


def verdict(ratio_low: float, ratio_high: float, tolerance: float = TOLERANCE) -> Verdict:
    """Faster only when the whole interquartile range of the per-round ratios is below 1 - tolerance, slower only
    when it is all above 1 + tolerance; anything else is inside the noise."""
    if ratio_high < 1.0 - tolerance:
        return "faster"
    if ratio_low > 1.0 + tolerance:
        return "slower"
    return "no measurable difference"


def compare_calls(
    before: Callable[[], Any],
    after: Callable[[], Any],
    rounds: int = 15,
    block_seconds: float = 0.02,
    warmup: int = 5,
    runtime: str = "torch",
    batch_size: int = 1,
    threads: int = 1,
    tolerance: float = TOLERANCE,
) -> LatencyComparison:
    """Time two zero-argument callables against each other: ``rounds`` rounds, each one block of ``before`` and one
    of ``after`` (the order alternating between rounds), every block the same number of calls (about
    ``block_seconds`` of the slower side), every call timed on its own.

    Reported times are the median and quartiles of all calls of a side. The ratio is taken per round between the
    fastest call of each side's block: another process taking the CPU for a moment slows some calls a lot, and
    the fastest call of a block is the one it did not hit, so the per-round ratios stay steady on a busy machine.
    """
    t0 = time.perf_counter()
    for _ in range(warmup):
        before()
        after()
    probe = []
    for fn in (before, after):  # calls per block from a short probe of each side
        s = time.perf_counter()
        n = 0
        while time.perf_counter() - s < block_seconds / 4 or n < 2:
            fn()
            n += 1
        probe.append((time.perf_counter() - s) / n)
    calls = max(5, int(block_seconds / max(max(probe), 1e-7)))
    clock = time.perf_counter

    def block(fn: Callable[[], Any]) -> list[float]:
        out = []
        for _ in range(calls):
            s = clock()
            fn()
            out.append((clock() - s) * 1e3)  # ms
        return out

    b_all, a_all, ratios = [], [], []
    for r in range(rounds):
        if r % 2 == 0:
            b, a = block(before), block(after)
        else:
            a, b = block(after), block(before)
        b_all += b
        a_all += a
        ratios.append(min(a) / min(b))
    bl, bm, bh = _quartiles(b_all)
    al, am, ah = _quartiles(a_all)
    rl, rm, rh = _quartiles(ratios)
    return LatencyComparison(
        runtime=runtime, batch_size=batch_size, threads=threads, rounds=rounds, calls_per_block=calls,
        before_ms=bm, before_low_ms=bl, before_high_ms=bh, after_ms=am, after_low_ms=al, after_high_ms=ah,
        ratio=rm, ratio_low=rl, ratio_high=rh, tolerance=tolerance, verdict=verdict(rl, rh, tolerance),
        seconds=time.perf_counter() - t0,
    )


def model_call(model: nn.Module, example: Any) -> Callable[[], Any]:
    """A zero-argument call of ``model`` on ``example`` (float inputs cast to the model's dtype, token ids never)."""
    model.eval()
    args, kwargs = I.example_args(I.cast_floats(example, I.input_dtype(model)))

    def call() -> Any:
        return model(*args, **kwargs)  # the caller holds no_grad around the whole timing (not per call)

    return call


def compare_latency(
    before: nn.Module,
    after: nn.Module,
    example: Any,
    threads: int = 1,
    rounds: int = 15,
    block_seconds: float = 0.02,
    tolerance: float = TOLERANCE,
) -> LatencyComparison:
    """``before`` vs ``after`` on the same ``example`` batch, interleaved in one run with ``threads`` intra-op
    threads (restored afterwards)."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            return compare_calls(model_call(before, example), model_call(after, example), rounds=rounds,
                                 block_seconds=block_seconds, batch_size=I.n_items(example), threads=threads,
                                 tolerance=tolerance)
    finally:
        torch.set_num_threads(old)


__all__ = ["LatencyComparison", "TOLERANCE", "compare_calls", "compare_latency", "model_call", "verdict"]
