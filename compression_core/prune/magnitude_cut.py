"""torch.nn.utils.prune's L1Unstructured mask, computed from a threshold instead of a top-k.

``L1Unstructured`` zeroes the ``k = round(amount * n)`` smallest ``|w|`` with ``torch.topk(k, largest=False)``: on
MiniLM's 36 Linear layers that is ~0.4 s of every magnitude-pruning step (1.5 s globally, over 10.6 M weights at once),
most of what a live slider move spends applying a recipe. Here the same mask is ``|w| > cut`` where ``cut`` is the
k-th smallest ``|w|``, taken from the tensor's sorted magnitudes when they are kept (a lookup), else from
``torch.kthvalue`` (a selection, ~2.5x cheaper than the top-k). The mask is used only when exactly ``k`` values are
``<= cut``: then they ARE the k smallest and the mask is the top-k's, bit for bit, whatever the cut came from. On a
tie at the cut (torch's top-k would pick among equal values) or NaN, it falls back to torch's own top-k.

Sorted magnitudes are kept per process by the tensor's content (a cheap fingerprint; a collision only costs a miss,
never a wrong mask, since every cut is checked on the tensor itself) from the SECOND time the same values are pruned:
a one-off pruning (the CLI) pays only the selection, a live page that prunes the same baseline at many amounts pays
one sort per weight; the cost estimate's sorted magnitudes of a base weight are the same tensors
(``shared_sorted``: one copy per process). Memory is bounded: ``MAX_BYTES`` (512 MiB, 4 bytes per weight; MiniLM's
36 Linear weights take 42 MB, 84 MB with the global-scope concatenation, a BERT-base's 72 take 340 MB: with 256 MiB
its weights left out were selected again on every move, 72 selections ~0.7 s of each sparsity move's apply and
~1.1 s of its size estimate); entries unused for ``STALE_S`` make room, else a new one is not sorted at all (the
ones left out get the selection on every pruning instead of a sort that could not be kept and costs ~4x the
selection).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict

import torch
from torch.nn.utils import prune as torch_prune

MAX_BYTES = 512 * 2**20
STALE_S = 300.0
_SAMPLES = 2048


class _Sorted:
    """Sorted magnitudes by content fingerprint (thread-safe; see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: OrderedDict[tuple, tuple[torch.Tensor, float]] = OrderedDict()  # key -> (sorted, last use)
        self.seen: OrderedDict[tuple, None] = OrderedDict()  # keys met once (not yet sorted)
        self.bytes = 0

    def get(self, key: tuple) -> torch.Tensor | None:
        with self.lock:
            hit = self.items.get(key)
            if hit is None:
                return None
            self.items[key] = (hit[0], time.monotonic())
            self.items.move_to_end(key)
            return hit[0]

    def second_time(self, key: tuple) -> bool:
        """True when ``key`` was met before (then sorting pays); remembers it otherwise."""
        with self.lock:
            if key in self.seen:
                return True
            self.seen[key] = None
            while len(self.seen) > 4096:
                self.seen.popitem(last=False)
            return False

    def has_room(self, n: int) -> bool:
        """Whether ``n`` more bytes could be kept now (free room, or entries unused for ``STALE_S`` to make room):
        sorting pays only then; a weight the store cannot keep is served by the selection."""
        with self.lock:
            if n > MAX_BYTES:
                return False
            if self.bytes + n <= MAX_BYTES:
                return True
            now = time.monotonic()
            return self.bytes + n - sum(t.numel() * t.element_size() for t, used in self.items.values()
                                        if now - used > STALE_S) <= MAX_BYTES

    def put(self, key: tuple, s: torch.Tensor) -> None:
        n = s.numel() * s.element_size()
        with self.lock:
            if key in self.items or n > MAX_BYTES:
                return
            now = time.monotonic()
            for old in [k for k, (_, used) in self.items.items() if now - used > STALE_S]:  # oldest first
                if self.bytes + n <= MAX_BYTES:
                    break
                gone = self.items.pop(old)[0]
                self.bytes -= gone.numel() * gone.element_size()
            if self.bytes + n > MAX_BYTES:
                return  # full of recently used entries: this one is served by the selection
            self.items[key] = (s, now)
            self.bytes += n


_SORTED = _Sorted()


def _key(a: torch.Tensor) -> tuple:
    """A cheap fingerprint of ``a`` (1-D, contiguous): its size and ~2,000 evenly spaced values."""
    n = a.numel()
    sample = a[:: max(1, n // _SAMPLES)]
    digest = hashlib.blake2b(sample.numpy().tobytes(), digest_size=16).digest()
    return (n, str(a.dtype), float(a[-1]), digest)


def smallest_k(a: torch.Tensor, k: int) -> torch.Tensor | None:
    """A bool mask of the ``k`` (>= 1) smallest values of the 1-D ``a`` when they are unambiguous (exactly ``k``
    values at or below the k-th smallest), else None (a tie at the cut, NaN: the caller uses torch's top-k)."""
    if a.dtype != torch.float32 or a.device.type != "cpu" or not a.is_contiguous() or k > a.numel():
        return None
    key = _key(a)
    s = _SORTED.get(key)
    if s is None and _SORTED.second_time(key) and _SORTED.has_room(a.numel() * a.element_size()):
        s = torch.sort(a).values
        _SORTED.put(key, s)
    cut = s[k - 1] if s is not None else torch.kthvalue(a, k).values
    below = a <= cut
    if int(torch.count_nonzero(below)) != k:
        if s is None:
            return None
        cut = torch.kthvalue(a, k).values  # a fingerprint collision: select on the tensor itself
        below = a <= cut
        if int(torch.count_nonzero(below)) != k:
            return None
    return below


def shared_sorted(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``s`` (``a`` sorted, computed by the caller) kept in this store for the masks of later prunings of ``a``, or
    the equal tensor the store already holds: one copy of a weight's sorted magnitudes per process, whoever sorted
    it first (the cost estimate sorts every base weight of a model it is asked about). Nothing is ever read from the
    store unchecked here: a stored tensor is used only when it equals ``s``."""
    if a.dtype != torch.float32 or a.device.type != "cpu" or not a.is_contiguous():
        return s
    key = _key(a)
    held = _SORTED.get(key)
    if held is not None and held.shape == s.shape and torch.equal(held, s):
        return held
    if held is None:
        _SORTED.put(key, s)
    return s


class CutL1Unstructured(torch_prune.L1Unstructured):
    """``L1Unstructured`` whose mask comes from a checked threshold (see the module docstring): the same mask, the
    same hook type for everything that inspects it (``isinstance(hook, L1Unstructured)``), repeated pruning and
    ``global_unstructured`` included."""

    def compute_mask(self, t, default_mask):
        n = t.nelement()
        k = torch_prune._compute_nparams_toprune(self.amount, n)
        torch_prune._validate_pruning_amount(k, n)
        if k == 0:
            return super().compute_mask(t, default_mask)
        below = smallest_k(torch.abs(t.detach()).reshape(-1).contiguous(), k)
        if below is None:
            return super().compute_mask(t, default_mask)
        # the same values as masked_fill(below, 0) on a 0/1 mask, ~5x faster (masked_fill with a bool mask: ~4 ns a
        # value; 40 ms of every MiniLM move)
        return default_mask.contiguous() * below.view(default_mask.shape).logical_not()
