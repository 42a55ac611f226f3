"""This machine's CPU, detected once at run time: what the dashboard and the lessons say about int8, bf16 and fp16
speed comes from here, never from text written on another machine.

>>> facts = cpu_facts(); facts.int8_dot, facts.bf16, facts.summary()

The feature flags are read by ``cpu_flags`` (/proc/cpuinfo), the one place that parses them;
``torch.backends.cpu.get_cpu_capability()`` says which SIMD kernels torch itself dispatches to.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import torch

INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX-512 BF16 / AMX, ARM bf16
FP16_FLAGS = ("avx512_fp16", "amx_fp16", "fphp", "asimdhp")  # native half-precision arithmetic
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16",
               "asimddp", "asimdhp")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags (Linux /proc/cpuinfo); empty where unknown."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip().lower()
        if key in ("flags", "features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_int8_dot() -> bool:
    """True if the CPU has int8 dot-product instructions (x86 VNNI / AMX, ARM dotprod): then int8 multiply-adds
    accumulate straight into int32 without the int16 saturation that makes ONNX Runtime's ``reduce_range``
    necessary."""
    if cpu_flags() & set(INT8_DOT_FLAGS):
        return True
    return platform.system() == "Darwin" and platform.machine() == "arm64"  # Apple silicon has dotprod


def cpu_summary() -> str:
    """One line: the int8-relevant SIMD features of this CPU."""
    flags = cpu_flags()
    have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp") if f in flags]
    return (f"{platform.machine()}, {os.cpu_count()} cores, features: {', '.join(have) or 'unknown'}; int8 "
            f"dot-product instructions: {'yes' if cpu_has_int8_dot() else 'no'}")


@dataclass(frozen=True)
class CpuFacts:
    """What this CPU can do, as far as compression speed is concerned."""

    machine: str  # x86_64, arm64, ...
    model_name: str  # "AMD EPYC ..." or "" where unknown
    cores: int
    flags: tuple[str, ...]  # the SHOWN_FLAGS this CPU has
    avx2: bool
    avx512: bool
    int8_dot: bool  # int8 dot-product instructions (VNNI, AMX-INT8, ARM dotprod)
    bf16: bool  # native bf16 arithmetic (AVX-512 BF16, AMX-BF16, ARM bf16)
    fp16: bool  # native fp16 arithmetic (AVX-512 FP16, ARM fp16)
    torch_capability: str  # the kernels torch dispatches to ("AVX2", "AVX512", "DEFAULT", ...)
    quantized_engine: str  # torch's int8 engine ("x86", "fbgemm", "qnnpack", ...)

    def summary(self) -> str:
        """One line: machine, cores, the relevant features and the three yes/no answers."""
        name = f"{self.model_name}, " if self.model_name else ""
        return (f"{name}{self.machine}, {self.cores} cores, features: {', '.join(self.flags) or 'unknown'}; "
                f"int8 dot-product: {_yes(self.int8_dot)}, bf16 arithmetic: {_yes(self.bf16)}, "
                f"fp16 arithmetic: {_yes(self.fp16)}")

    def int8_sentence(self) -> str:
        """Whether int8 arithmetic itself is cheap here."""
        if self.int8_dot:
            return ("This CPU has int8 dot-product instructions (" + ", ".join(f for f in self.flags if f in INT8_DOT_FLAGS)
                    + "): int8 multiply-adds are cheap here, so where int8 is still slower the cost is the runtime's "
                    "quantize/dequantize work and per-call overhead, not the arithmetic.")
        return ("This CPU has no int8 dot-product instructions (no VNNI / AMX / dotprod): int8 multiply-adds go "
                "through 16-bit intermediate sums, so int8 arithmetic is barely cheaper than fp32 here.")

    def half_sentence(self) -> str:
        """Whether fp16 / bf16 arithmetic is native here."""
        have = [n for n, ok in (("bf16", self.bf16), ("fp16", self.fp16)) if ok]
        lack = [n for n, ok in (("bf16", self.bf16), ("fp16", self.fp16)) if not ok]
        parts = []
        if have:
            parts.append(f"this CPU has native {' and '.join(have)} instructions, but whether torch's kernels use them "
                         "for layers this small is what the timing above shows")
        if lack:
            parts.append(f"{'it' if have else 'this CPU'} has no native {' / '.join(lack)} arithmetic, so every "
                         f"{' / '.join(lack)} operation is converted to fp32 and back")
        text = "; ".join(parts) + "."
        return text[0].upper() + text[1:]

    def to_json_dict(self) -> dict:
        return asdict(self)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip().lower() in ("model name", "cpu model"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def detect() -> CpuFacts:
    """Read the facts now (``cpu_facts()`` caches them for the process)."""
    flags = cpu_flags()
    apple = platform.system() == "Darwin" and platform.machine() == "arm64"
    try:
        capability = str(torch.backends.cpu.get_cpu_capability())
    except Exception:  # pragma: no cover - very old torch
        capability = "unknown"
    return CpuFacts(
        machine=platform.machine(), model_name=_model_name(), cores=os.cpu_count() or 1,
        flags=tuple(f for f in SHOWN_FLAGS if f in flags),
        avx2="avx2" in flags, avx512="avx512f" in flags,
        int8_dot=cpu_has_int8_dot(),
        bf16=bool(flags & set(BF16_FLAGS)) or apple,
        fp16=bool(flags & set(FP16_FLAGS)) or apple,
        torch_capability=capability, quantized_engine=str(torch.backends.quantized.engine),
    )


@lru_cache(maxsize=1)
def cpu_facts() -> CpuFacts:
    """This machine's CPU facts, detected once per process."""
    return detect()


__all__ = ["CpuFacts", "cpu_facts", "cpu_flags", "cpu_has_int8_dot", "cpu_summary", "detect"]
