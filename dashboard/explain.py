"""Plain-language answers to "why is my compressed model not smaller / not faster?", built from measured numbers.

What a result is made of comes from the techniques' own declarations (``TechniqueUI.storage``: "sparse" zeros,
"int8"/"int4" codes, "fp16" halves, "simulated" rounding, "shrunk" removed units), never from lists of kinds.
"""

from __future__ import annotations


def _kb(n: int | float | None) -> str:
    return "-" if n is None else f"{n / 1024:,.1f} KB"


def _is_norm(type_name: str) -> bool:
    return "Norm" in type_name


def structure_change(before_layers: list[dict], after_layers: list[dict]) -> dict:
    """What happened to the model's structure, layer by layer: units removed (a weight layer lost parameters or
    disappeared) and normalisation layers folded into the layer before them (they disappear, weights keep their
    shape)."""
    after = {r["name"]: r for r in after_layers}
    shrunk = [r["name"] for r in before_layers if not _is_norm(r["type"]) and r["name"] in after
              and after[r["name"]]["params"] < r["params"]]
    gone = [r["name"] for r in before_layers if not _is_norm(r["type"]) and r["name"] not in after]
    folded = [r for r in before_layers if _is_norm(r["type"]) and r["name"] not in after]
    return {"shrunk": shrunk, "removed": gone, "folded": [r["name"] for r in folded],
            "folded_params": sum(r["params"] for r in folded)}


def names_list(names: list[str], shown: int = 6) -> str:
    """The first ``shown`` names, then "and N more" when there are more (never a silent cut)."""
    head = ", ".join(names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")


def why_size(before: dict, after: dict, storages: list[str], classifier: str | None = None) -> list[str]:
    """Sentences about file size and parameter count, each quoting the numbers it rests on. ``classifier``: the
    output layer the page leaves alone (not compressed): it may only lose the inputs of units removed before it,
    and is named as such, never among the layers made smaller."""
    out = []
    ratio = after["size_bytes"] / before["size_bytes"]
    zeros = after["params"] - after["nonzero_params"]
    rounds = any(s in ("int8", "int4", "fp16", "simulated") for s in storages)  # a step that rounds weights
    # zeros from a step that rounds nothing are pruned (structured masks are stored dense until shrunk)
    sparse = "sparse" in storages or "shrunk" in storages or (zeros > 0 and not rounds)
    change = structure_change(before.get("layers", []), after.get("layers", []))
    units_removed = bool(change["shrunk"] or change["removed"])
    if zeros > 0 and not sparse and after["params"] == before["params"]:
        out.append(f"**Zeros from rounding:** {zeros:,} small weights rounded to exactly 0 at this bit width; "
                   "nothing was pruned.")
    if zeros > 0 and sparse and not units_removed and ratio > 0.9:
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
    if units_removed:
        touched = [n for n in change["shrunk"] + change["removed"] if n != classifier]
        cls_smaller = classifier is not None and classifier in change["shrunk"]
        where = f", so these layers are smaller ({names_list(touched)})" if touched else ""
        out.append(f"**Shrunk:** units were removed{where}: {after['params']:,} parameters vs "
                   f"{before['params']:,}, file {_kb(after['size_bytes'])} ({ratio:.2f}x)."
                   + (f" The classifier `{classifier}` keeps all its outputs; it is smaller only because the layer "
                      "before it lost units (its inputs)." if cls_smaller else ""))
    if change["folded"]:
        out.append(f"**BatchNorm folded:** {names_list(change['folded'])} ({change['folded_params']:,} parameters) "
                   "were merged into the weights and biases of the layers before them, so the parameter count is "
                   f"{after['params']:,} vs {before['params']:,}"
                   + ("" if units_removed else "; no neuron or channel was removed") + ".")
    if after.get("simulated"):
        out.append(
            f"**Simulated:** fake quantization rounds the weights to the chosen bits but still stores them as fp32, "
            f"so the real file is {_kb(after['size_bytes'])}; the *theoretical* size (bits x params) would be "
            f"{_kb(after.get('theoretical_size_bytes'))}. Use a real method (int8, int4 packed) to get it.")
    elif "fp16" in storages:
        out.append(f"**fp16/bf16:** every tensor is stored in 16 bits: {_kb(after['size_bytes'])} vs "
                   f"{_kb(before['size_bytes'])} ({ratio:.2f}x).")
    elif "int8" in storages or "int4" in storages:
        out.append(f"**Real quantization:** the chosen layers' weights are stored in fewer bits: "
                   f"{_kb(after['size_bytes'])} vs {_kb(before['size_bytes'])} ({ratio:.2f}x). Layers left out "
                   "(the classifier by default, norms, biases) stay fp32, and each layer stores its scales.")
    return out


def grid_bits(steps: list[dict]) -> int | None:
    """The ``weight_bits`` below 8 a real int8 step restricts its codes to (None when no step does): the weights
    then take a smaller grid but are still stored as int8."""
    low = [int(s["weight_bits"]) for s in steps if isinstance(s.get("weight_bits"), int) and s["weight_bits"] < 8]
    return low[0] if low else None


def grid_layers(before_layers: list[dict], after_layers: list[dict], bits: int | None) -> dict[str, int]:
    """The layers whose int8 codes lie on the ``bits`` grid: those stored in 8 bits after and in more before."""
    if bits is None:
        return {}
    was = {r["name"]: r["bits"] for r in before_layers}
    return {r["name"]: bits for r in after_layers if r["bits"] == 8 and was.get(r["name"], 8) > 8}


def grid_note(bits: int) -> str:
    """What "Weight bits" below 8 does under a real int8 method, and what it does not."""
    return (f"Weight bits {bits}: each quantized layer's weights take at most {2 ** bits - 1} values (a {bits}-bit "
            "grid) but are still stored as int8 codes, so the file size does not change; the accuracy and the "
            f"per-layer chart ({bits} bits) show the grid. For a smaller file pick an int4 (packed) method.")


def speed_line(c: dict) -> str:
    """One comparison in words: conditions, both medians with their spread, the ratio and the verdict."""
    return (f"{c['runtime']}, batch {c['batch_size']}, {c['threads']} thread{'s' if c['threads'] > 1 else ''}: "
            f"after {c['after_ms']:.3f} ms ({c['after_low_ms']:.3f}-{c['after_high_ms']:.3f}) vs before "
            f"{c['before_ms']:.3f} ms ({c['before_low_ms']:.3f}-{c['before_high_ms']:.3f}) per call; "
            f"{c['ratio']:.2f}x ({c['ratio_low']:.2f}-{c['ratio_high']:.2f}x over {c['rounds']} interleaved rounds): "
            f"**{c['verdict']}**")


def why_speed(comparisons: list[dict], storages: list[str], cpu) -> list[str]:
    """Sentences about latency from before/after comparisons timed together (``compression_core.timing``)."""
    if not comparisons:
        return ["Latency is timed on request (button above): before and after run alternately in the same "
                "few hundred milliseconds, so both see the same machine."]
    out = ["Timed together, alternating before and after: " + "; ".join(speed_line(c) for c in comparisons) + ". "
           "The ranges are the middle half of all calls; a ratio whose middle half reaches within "
           f"{comparisons[0]['tolerance']:.0%} of 1 is called *no measurable difference*."]
    if all(c["verdict"] == "faster" for c in comparisons):
        return out
    if "sparse" in storages:
        out.append("**Not faster?** Zeroed weights still go through the same dense matrix multiply: every "
                   "multiplication by zero still costs time. Only removing whole neurons/channels/heads (structured "
                   "pruning + shrink) or sparse kernels at very high sparsity save work on a CPU.")
    if "int8" in storages or "int4" in storages:
        out.append(f"**int8 not faster?** {cpu.int8_sentence()} torch's int8 layers quantize the activations and "
                   "dequantize the results on every call; on small models that fixed work dominates, especially at "
                   "batch 1." + (" int4 weights are unpacked at run time, which costs time too."
                                 if "int4" in storages else ""))
    if "fp16" in storages:
        out.append("**fp16/bf16 not faster?** The file halves but the arithmetic does not get cheaper here: "
                   + cpu.half_sentence())
    if "simulated" in storages:
        out.append("**Simulated quantization** runs in fp32 plus rounding work: it predicts accuracy, not speed.")
    if "shrunk" in storages:
        out.append("**Shrunk but not much faster?** On models this small each call is mostly fixed cost (Python, "
                   "dispatch, memory traffic), so removing half the arithmetic saves less than half the time.")
    return out
