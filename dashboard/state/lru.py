"""``LRU``: a small thread-safe least-recently-used map, shared by every session of the process.

Not ``functools.lru_cache``: values are put from outside the function that computes them (a finished job's result, a
background measurement), and the computing calls take a progress callback that must not be part of the key.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any


class LRU:
    """A process-wide LRU of (value, seconds) by string key, at most ``size`` entries."""

    def __init__(self, size: int = 24) -> None:
        self.size = size
        self.items: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: str) -> tuple[Any, float] | None:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key: str, value: tuple[Any, float]) -> None:
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
