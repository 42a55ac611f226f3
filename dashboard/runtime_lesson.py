"""The Learn page's lesson on runtimes: why the runtime decides whether int8 is faster, explained around a table
measured now on this machine by the library (``compression_core.ort.runtime_comparison``). Prose lives here, in the
dashboard; the library only measures."""

from __future__ import annotations

from typing import Any

from compression_core.cpu import cpu_has_int8_dot, cpu_summary
from compression_core.ort import fastest_int8


def why_runtime_matters(model_name: str, rows: list[dict[str, Any]]) -> str:
    """A plain-language explanation of why the runtime decides whether int8 is faster, around ``rows``: the table
    ``compression_core.ort.runtime_comparison`` measured just now on this machine for the workload ``model_name``."""
    table = ["| runtime | model | size | accuracy | ms @ batch 1 | ms @ batch 32 | vs fp32 @1 | vs fp32 @32 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['runtime']} | {r['path']} | {r['size_bytes'] / 1024:,.0f} KB | {r['accuracy'] * 100:.1f}% "
                     f"| {r['ms_b1']:.3f} | {r['ms_b32']:.3f} | {r['speedup_b1']:.2f}x | {r['speedup_b32']:.2f}x |")
    t = {(r["runtime"], r["path"]): r for r in rows}
    tq, oq = t[("torch", "int8 dynamic")], t[("onnxruntime", "int8 dynamic")]
    best = fastest_int8(rows)
    return "\n".join([
        "### Why the runtime matters for int8",
        "",
        "Quantizing to int8 makes the weights 4x smaller. Whether it also makes the model *faster* depends on "
        "the code that runs it. An int8 model only wins if the runtime has int8 kernels that beat its fp32 ones "
        "on this CPU, and if the cost of converting activations to int8 and back is small next to the saved work.",
        "",
        "Fast int8 matrix multiplication on x86 relies on an int8 dot-product instruction (VNNI: `vpdpbusd`), "
        "which multiplies 8-bit numbers and adds them straight into 32-bit sums. CPUs with only AVX2 have to use "
        "`vpmaddubsw`, which adds pairs into 16-bit sums first (it can overflow, which is why ONNX Runtime offers "
        "`reduce_range`, 7-bit weights) and needs extra instructions to widen them, so int8 is barely cheaper "
        "than fp32 there, and the quantize/dequantize steps around each layer can make it slower. Runtimes also "
        "differ in overhead: torch runs a dynamic int8 Linear as its own call that finds the activations' range, "
        "quantizes them, multiplies and dequantizes, with Python and dispatcher work between layers, which "
        "dominates for small layers at batch 1; ONNX Runtime plans the whole graph once when the session starts "
        "and fuses quantize, multiply and dequantize into its kernels.",
        "",
        ("This machine's CPU has an int8 dot-product instruction, so the int8 arithmetic itself is cheap here: "
         "the differences below come mostly from each runtime's overheads, and on an AVX2-only CPU int8 gains "
         "less still." if cpu_has_int8_dot() else
         "This machine's CPU has no int8 dot-product instruction (AVX2 only): exactly the case where the "
         "runtime decides whether int8 pays off."),
        "",
        f"Measured just now on this machine ({cpu_summary()}), `{model_name}`, 1 thread, median latency; "
        "'vs fp32' is the speed-up over fp32 in the same runtime (above 1 = faster):",
        "",
        *table,
        "",
        f"Here torch's dynamic int8 is {_times(tq['speedup_b1'])} fp32 at batch 1 and {_times(tq['speedup_b32'])} "
        f"fp32 at batch 32; ONNX Runtime's dynamic int8 is {_times(oq['speedup_b1'])} its fp32 at batch 1 and "
        f"{_times(oq['speedup_b32'])} its fp32 at batch 32, and {tq['ms_b1'] / oq['ms_b1']:.1f}x faster than torch's "
        f"int8 at batch 1. The fastest int8 path at batch 32 is {best['runtime']} {best['path']} "
        f"({best['ms_b32']:.3f} ms, {_times(best['speedup_b32'])} fp32 in {best['runtime']}). "
        "The lesson: size and accuracy travel with the model, speed does not: "
        "measure int8 in the runtime you will deploy with.",
        "",
        "(The machine is shared with other work, so absolute times are noisy; ratios are measured in one run.)",
    ])


def _times(ratio: float) -> str:
    return f"{ratio:.2f}x as fast as" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"
