"""Plain-language answers to "why is my compressed model not smaller / not faster?", built from measured numbers."""

from __future__ import annotations


def _kb(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 1024:,.1f} KB"


def why_size(before: dict, after: dict, kinds: list[str]) -> list[str]:
    """Sentences about file size, each quoting the numbers it rests on."""
    out = []
    ratio = after["size_bytes"] / before["size_bytes"]
    zeros = after["params"] - after["nonzero_params"]
    pruned = any(k.startswith("prune") or k in ("lottery_ticket", "network_slimming", "fit_budget") for k in kinds)
    if zeros > 0 and not pruned and after["params"] == before["params"]:
        out.append(f"**Zeros from rounding:** {zeros:,} small weights rounded to exactly 0 at this bit width; "
                   "nothing was pruned.")
    if zeros > 0 and pruned and after["params"] == before["params"] and ratio > 0.9:
        out.append(
            f"**Not smaller on disk?** {zeros:,} of {after['params']:,} weights are now zero, but a normal "
            f"`torch.save` file stores zeros like any other number: {_kb(after['size_bytes'])} vs "
            f"{_kb(before['size_bytes'])} before ({ratio:.2f}x)."
        )
        if after.get("sparse_size_bytes") is not None:
            out.append(f"Stored sparse (only non-zeros plus their positions) the same model takes "
                       f"{_kb(after['sparse_size_bytes'])} ({after['sparse_size_bytes'] / before['size_bytes']:.2f}x).")
        else:
            out.append("A sparse encoding (only the non-zeros and their positions) or *shrinking* (structured "
                       "pruning, then physically removing the zeroed neurons/channels) is what makes the file smaller.")
    if after["params"] < before["params"]:
        out.append(f"**Shrunk:** the model really has fewer parameters: {after['params']:,} vs {before['params']:,}, "
                   f"file {_kb(after['size_bytes'])} ({ratio:.2f}x).")
    if after.get("simulated"):
        out.append(
            f"**Simulated:** fake quantization rounds the weights to the chosen bits but still stores them as fp32, "
            f"so the real file is {_kb(after['size_bytes'])}; the *theoretical* size (bits x params) would be "
            f"{_kb(after.get('theoretical_size_bytes'))}. Use a real method (int8, int4 packed) to get it.")
    elif "quantize_half" in kinds:
        out.append(f"**fp16/bf16:** every tensor is stored in 16 bits: {_kb(after['size_bytes'])} vs "
                   f"{_kb(before['size_bytes'])} ({ratio:.2f}x).")
    elif any(k in ("quantize_dynamic", "quantize_static", "quantize_qat", "quantize_int4") for k in kinds):
        out.append(f"**Real quantization:** the chosen layers' weights are stored in fewer bits: "
                   f"{_kb(after['size_bytes'])} vs {_kb(before['size_bytes'])} ({ratio:.2f}x). Layers left out "
                   "(the classifier by default, norms, biases) stay fp32, and each layer stores its scales.")
    return out


def why_speed(before_lat: dict | None, after_lat: dict | None, kinds: list[str], batch: int) -> list[str]:
    """Sentences about latency, from the two medians measured in the same session."""
    if not before_lat or not after_lat:
        return ["Latency is measured on request (button above): timing needs many repeated runs."]
    r = after_lat["latency_ms"] / before_lat["latency_ms"]
    verdict = "faster" if r < 0.95 else ("slower" if r > 1.05 else "about as fast")
    out = [f"Measured at batch {batch}: {after_lat['latency_ms']:.3f} ms vs {before_lat['latency_ms']:.3f} ms "
           f"before ({r:.2f}x, {verdict})."]
    if r >= 0.95:
        if any(k in ("prune_unstructured", "prune_threshold", "lottery_ticket") for k in kinds):
            out.append("**Not faster?** Zeroed weights still go through the same dense matrix multiply: every "
                       "multiplication by zero still costs time. Only removing whole neurons/channels/heads (structured "
                       "pruning + shrink) or sparse kernels at very high sparsity save work on a CPU.")
        if any(k in ("quantize_dynamic", "quantize_static", "quantize_int4", "quantize_qat") for k in kinds):
            from compression_core.ort import cpu_has_int8_dot, cpu_summary

            dot = ("has int8 dot-product instructions, but" if cpu_has_int8_dot()
                   else "has no int8 dot-product instructions, and")
            out.append(f"**int8 not faster?** This CPU ({cpu_summary()}) {dot} "
                       "torch's int8 kernels add quantize/dequantize work; on tiny models that overhead dominates, "
                       "especially at batch 1. int4 weights are unpacked at run time, which costs time too.")
        if "quantize_half" in kinds:
            out.append("**fp16/bf16 slower?** CPUs without native half-precision math convert back and forth; "
                       "the file halves but the arithmetic does not get cheaper here.")
        if "fake_quant" in kinds:
            out.append("**Simulated quantization** runs in fp32 plus rounding work: it predicts accuracy, not speed.")
    return out
