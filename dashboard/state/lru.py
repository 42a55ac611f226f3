"""``LRU``: a small thread-safe least-recently-used map, shared by every session of the process.

Not ``functools.lru_cache``: values are put from outside the function that computes them (a finished job's result, a
background measurement), and the computing calls take a progress callback that must not be part of the key.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable

from torch import nn


class LRU:
    """A process-wide LRU of (value, seconds) by string key, at most ``size`` entries and, when ``max_bytes`` is
    given, at most that many bytes as ``weigh(value)`` counts them (the newest entry is always kept)."""

    def __init__(self, size: int = 24, max_bytes: int | None = None,
                 weigh: Callable[[Any], int] | None = None) -> None:
        self.size, self.max_bytes, self.weigh = size, max_bytes, weigh
        self.items: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.weights: dict[str, int] = {}
        self.lock = threading.Lock()

    @property
    def bytes(self) -> int:
        return sum(self.weights.values())

    def get(self, key: str) -> tuple[Any, float] | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: str, value: tuple[Any, float]) -> None:
        weight = int(self.weigh(value)) if self.weigh is not None and self.max_bytes is not None else 0
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            self.weights[key] = weight
            while len(self.items) > 1 and (len(self.items) > self.size or
                                           (self.max_bytes is not None and self.bytes > self.max_bytes)):
                old, _ = self.items.popitem(last=False)
                self.weights.pop(old, None)


def model_bytes(value: Any) -> int:
    """Bytes of the tensors (parameters and buffers, each storage once) of a ``(result, seconds)`` value's
    ``result.model``: what keeping a compressed model costs (a 110 M parameter model: ~440 MB each)."""
    model = getattr(value[0] if isinstance(value, tuple) else value, "model", None)
    if not isinstance(model, nn.Module):
        return 0
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        try:
            st = t.untyped_storage()
            ptr, n = st.data_ptr(), st.nbytes()
        except (RuntimeError, NotImplementedError):  # a tensor without plain storage (quantized, sparse)
            ptr, n = id(t), t.numel() * t.element_size()
        if ptr not in seen:
            seen.add(ptr)
            total += n
    for m in model.modules():  # packed int8 / quantized modules keep their weights outside parameters()
        w = getattr(m, "_packed_params", None)
        if w is not None and hasattr(m, "weight") and callable(m.weight):
            try:
                q = m.weight()
                total += q.numel() * q.element_size()
            except Exception:  # a packed format that cannot unpack here: not counted
                pass
    return total
