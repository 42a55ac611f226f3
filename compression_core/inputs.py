"""Model inputs of any shape a workload may have: a float tensor, an integer tensor (token ids) or a dict of tensors
passed as keyword arguments (a tokenizer's output). Every batch operation goes through here, so token ids are never
cast to a float dtype and a dict input is sliced key by key.
"""

from __future__ import annotations

from typing import Any, Mapping, Union

import torch
from torch import nn

Inputs = Union[torch.Tensor, Mapping[str, torch.Tensor]]


def is_dict(x: Any) -> bool:
    return isinstance(x, Mapping)


def n_items(x: Inputs) -> int:
    """Number of samples (the first dimension; every tensor of a dict input has the same)."""
    if is_dict(x):
        return int(next(iter(x.values())).shape[0]) if x else 0
    return int(x.shape[0])


def take(x: Inputs, index: slice | torch.Tensor | list[int]) -> Inputs:
    """Samples ``index`` (a slice or integer indices) of ``x``; a dict is indexed key by key."""
    if isinstance(index, list):
        index = torch.as_tensor(index, dtype=torch.long)
    if is_dict(x):
        return {k: v[index] for k, v in x.items()}
    return x[index]


def head(x: Inputs, n: int) -> Inputs:
    """The first ``n`` samples, repeated when there are fewer (a latency batch larger than the split)."""
    total = n_items(x)
    if total >= n:
        return take(x, slice(0, n))
    reps = (n + total - 1) // total
    idx = torch.arange(total).repeat(reps)[:n]
    return take(x, idx)


def cat(parts: list[Inputs]) -> Inputs:
    if parts and is_dict(parts[0]):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(parts)  # type: ignore[arg-type]


def cast_floats(x: Inputs, dtype: torch.dtype) -> Inputs:
    """``x`` with its floating-point tensors in ``dtype``; integer and bool tensors (token ids, masks) unchanged."""
    if is_dict(x):
        return {k: cast_floats(v, dtype) for k, v in x.items()}  # type: ignore[misc]
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != dtype:
        return x.to(dtype)
    return x


def input_dtype(model: nn.Module) -> torch.dtype:
    """fp16/bf16 models take float inputs of their own dtype; everything else takes fp32."""
    for p in model.parameters():
        if p.dtype in (torch.float16, torch.bfloat16):
            return p.dtype
        break
    return torch.float32


def as_logits(out: Any) -> torch.Tensor:
    """The tensor a model returned: a plain tensor, ``out.logits`` (Hugging Face outputs) or the first of a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(f"the model returned {type(out).__name__}, not a tensor of outputs")


def call(model: nn.Module, x: Inputs) -> torch.Tensor:
    """``model(x)`` (``model(**x)`` for a dict input) with float inputs cast to the model's dtype; the output tensor."""
    x = cast_floats(x, input_dtype(model))
    out = model(**x) if is_dict(x) else model(x)
    return as_logits(out)


@torch.no_grad()
def predict(model: nn.Module, x: Any, batch_size: int = 1024) -> torch.Tensor:
    """Outputs for ``x`` (a tensor or a dict of tensors) in eval mode, batched; float inputs are cast to the model's
    dtype, integer inputs (token ids) never are (no_grad, not inference_mode: CSR weights fail under it)."""
    was_training = model.training
    model.eval()
    n = n_items(x)
    try:
        outs = [call(model, take(x, slice(i, i + batch_size))).float() for i in range(0, n, batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs)


def shape_text(x: Inputs) -> str:
    if is_dict(x):
        return "{" + ", ".join(f"{k}: {tuple(v.shape)} {str(v.dtype).replace('torch.', '')}" for k, v in x.items()) + "}"
    return f"{tuple(x.shape)} {str(x.dtype).replace('torch.', '')}"


def example_args(x: Inputs) -> tuple[tuple, dict]:
    """(args, kwargs) to call a model on ``x`` (tracers and exporters take them apart)."""
    if is_dict(x):
        return (), dict(x)
    return (x,), {}
