"""The artefact's layout without its data: what ``torch.save`` of a state_dict costs, computed from keys, shapes and
dtypes (``compression_core.cost`` builds the layouts; this module prices them).

A ``torch.save`` file is a zip archive (stored, not compressed) of the pickled object (``data.pkl``, which holds every
key, shape, stride and dtype) and one record per tensor storage, each record aligned to 64 bytes, plus a few constant
records and the zip directory. So its size is exactly: the pickle's length, plus each storage's bytes, plus a
container cost that depends only on the records' names and sizes. Here the pickle is produced by the same pickler
torch uses (protocol 2, the same persistent ids) on tensors allocated with ``torch.empty`` and never touched, and
the zip layout is computed; the constant records (their names and sizes) are read once from a real ``torch.save``,
and the whole arithmetic is checked against one at first use (a mismatch falls back to serialising for real).
"""

from __future__ import annotations

import dataclasses
import io
import pickle
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.serialization import location_tag, normalize_storage_type
from .io import shippable_state_dict
from .sparse import FORMAT, VERSION

_ALIGN = 64  # torch's zip records start at multiples of 64 bytes
_U32 = 0xFFFFFFFF


# ------------------------------------------------------------------------------------------ the container
def _pickle(obj: Any) -> tuple[int, list[int]]:
    """(length of torch.save's data.pkl for ``obj``, bytes of each storage record in order), without any data."""

    ids: dict[int, str] = {}
    sizes: list[int] = []

    def persistent_id(o):  # torch.serialization._save's persistent_id, minus the data
        if isinstance(o, torch.storage.TypedStorage) or torch.is_storage(o):
            if isinstance(o, torch.storage.TypedStorage):
                storage, stype, numel = o._untyped_storage, getattr(torch, o._pickle_storage_type()), o._size()
            else:
                storage, stype, numel = o, normalize_storage_type(type(o)), o.nbytes()
            if storage._cdata not in ids:
                ids[storage._cdata] = str(len(ids))
                sizes.append(storage.nbytes())
            return ("storage", stype, ids[storage._cdata], location_tag(storage), numel)
        return None

    class _Pickler(pickle.Pickler):
        def persistent_id(self, o):
            return persistent_id(o)

    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return len(buf.getbuffer()), sizes


def _record(offset: int, name: str, size: int) -> int:
    """End offset of one zip record (local header, alignment padding, data, data descriptor) starting at ``offset``."""
    start = offset + 30 + len(name) + 4  # local header, name, the padding field's own header
    if size >= _U32 or offset >= _U32:
        start += 4 + (16 if size >= _U32 else 0) + (8 if offset >= _U32 else 0)
    start += -start % _ALIGN
    if size == 0:  # an empty record has no data descriptor
        return start
    return start + size + (24 if size >= _U32 else 16)


def _central(name: str, size: int, offset: int) -> int:
    extra = (8 if size >= _U32 else 0) * 2 + (8 if offset >= _U32 else 0)
    return 46 + len(name) + (4 + extra if extra else 0)


def zip_size(pickle_bytes: int, storages: list[int]) -> int:
    """Bytes of a ``torch.save`` file whose data.pkl has ``pickle_bytes`` and whose storages have these sizes."""
    prefix, before, after = _constants()
    records = [(prefix + "data.pkl", pickle_bytes)] + [(prefix + n, s) for n, s in before]
    records += [(f"{prefix}data/{i}", s) for i, s in enumerate(storages)] + [(prefix + n, s) for n, s in after]
    offset, central = 0, 0
    for name, size in records:
        central += _central(name, size, offset)
        offset = _record(offset, name, size)
    return offset + central + 56 + 20 + 22  # zip64 end of central directory, its locator, end of central directory


@lru_cache(maxsize=1)
def _constants() -> tuple[str, list[tuple[str, int]], list[tuple[str, int]]]:
    """(archive prefix, constant records before the storages, after them), read from a real torch.save."""
    buf = io.BytesIO()
    torch.save({"x": torch.zeros(3)}, buf)
    infos = zipfile.ZipFile(io.BytesIO(buf.getvalue())).infolist()
    names = [i.filename for i in infos]
    slot = next(i for i, n in enumerate(names) if n.endswith("/data/0"))
    prefix = names[0][: -len("data.pkl")]
    strip = len(prefix)
    before = [(i.filename[strip:], i.file_size) for i in infos[1:slot]]
    after = [(i.filename[strip:], i.file_size) for i in infos[slot + 1:]]
    return prefix, before, after


class _Count(io.RawIOBase):
    """A seekable sink that only counts bytes."""

    def __init__(self) -> None:
        self.pos = self.end = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self.pos += n
        self.end = max(self.end, self.pos)
        return n

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos if whence == 0 else self.pos + pos if whence == 1 else self.end + pos
        return self.pos


def _really_saved(obj: Any) -> int:
    sink = _Count()
    torch.save(obj, sink)
    return sink.end


@lru_cache(maxsize=1)
def _arithmetic_ok() -> bool:
    """Whether the computed size equals torch.save's on a mixed object (float, fp16, shared, quantized, Parameter)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = torch.randn(70, 33)
            q = torch.quantize_per_channel(w, torch.rand(70, dtype=torch.float64) + 0.1,
                                           torch.zeros(70, dtype=torch.int64), 0, torch.qint8)
            sd = OrderedDict(a=w, b=w, c=torch.randn(300).half(), d=(q, nn.Parameter(torch.randn(70))), e=torch.qint8,
                             f=None, g=torch.zeros((), dtype=torch.int64), h=torch.zeros(0),
                             i=torch.ones(5, dtype=torch.bool))
            sd._metadata = OrderedDict([("", {"version": 1}), ("a", {"version": 2})])  # type: ignore[attr-defined]
            return zip_size(*_pickle(sd)) == _really_saved(sd)
    except Exception:  # noqa: BLE001 - another torch: fall back to serialising
        return False


def saved_size(obj: Any) -> int:
    """Bytes of ``torch.save(obj)`` computed from its pickle and storage sizes (no tensor data is read)."""
    if _arithmetic_ok():
        return zip_size(*_pickle(obj))
    return _really_saved(obj)


# -------------------------------------------------------------------------------------------- entries
class Unknowable(Exception):
    """Raised by a values function whose values cannot be known before running: its zero count is unknown."""


_INT_CODES = {torch.qint8: torch.int8, torch.quint8: torch.uint8, torch.qint32: torch.int32}


@dataclass
class Entry:
    """One tensor of the artefact's state_dict, described by shape and dtype (its data is not needed).

    ``layer``/``pcount``: the ``measure.layer_stats`` row it counts in and how many parameters (0: a buffer);
    ``values``/``pvalues``: the stored values (int codes when quantized) and the parameters' values as layer_stats
    sees them, computed on demand for zero counts; ``zeros``/``pzeros``: those counts when known without them.
    ``tensor``: the original tensor while shape and dtype are unchanged (torch.save then writes its storage).
    """

    shape: tuple[int, ...]
    dtype: torch.dtype
    layer: str = ""
    pcount: int = 0
    role: str = ""  # the last part of the key ("weight", "bias", "qweight", ...)
    qscheme: str | None = None  # None | "tensor" | "channel"
    axis: int = 0
    zero_point: int = 0
    as_param: bool = False  # pickled as nn.Parameter (inside torch.ao's packed tuples)
    fixed: bool = False  # made by a quantized module's state_dict, not a module tensor: ``model.to(dtype)`` keeps it
    bits: int | None = None  # the bits layer_stats reports for its row when not the dtype's (int4, simulated)
    masked: int | None = 0  # positions under a pruning mask (None: all its zeros); prune amounts count the others
    tensor: torch.Tensor | None = field(default=None, repr=False)
    share: int | None = None  # entries with the same share key are one storage (tied weights)
    pid: int | None = None  # the model parameter it is (tied weights: layer_stats counts one parameter once)
    eshape: tuple[int, ...] | None = None  # the weight's shape as the layer computes with it (int4: unpacked)
    values: Callable[[], torch.Tensor] | None = field(default=None, repr=False)
    pvalues: Callable[[], torch.Tensor] | None = field(default=None, repr=False)
    zeros: int | None = None
    pzeros: int | None = None
    zeroed: tuple | None = ()  # ((dim, indices), ...) zeroed by structured masks since the base; None: other changes
    ckey: tuple | None = None  # how its values derive from the base model's: zero counts are cached under it
    cache: dict | None = field(default=None, repr=False, compare=False)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    def _count(self, which: str, fn) -> int | None:
        key = (which,) + self.ckey if self.cache is not None and self.ckey is not None else None
        if key is not None and key in self.cache:
            return self.cache[key]
        if fn is None:
            return None
        try:
            v = fn()
        except Unknowable:
            return None
        n = int((v == 0).sum())  # = numel - count_nonzero (NaN is non-zero in both), several times faster
        if key is not None:
            if len(self.cache) > 200_000:  # a long session: forget the counts of old configurations
                self.cache.clear()
            self.cache[key] = n
        return n

    def stored_zeros(self) -> int | None:
        if self.zeros is None:
            self.zeros = self._count("z", self.values)
        return self.zeros

    def masked_count(self) -> int | None:
        return self.masked if self.masked is not None else self.stored_zeros()

    def param_zeros(self) -> int | None:
        if self.pvalues is None:
            return self.stored_zeros()
        if self.pzeros is None:
            self.pzeros = self._count("p", self.pvalues)
        return self.pzeros

    def changed(self, **kw) -> "Entry":
        """A copy with ``kw`` changed; zero counts reset unless given, the original tensor dropped on a new shape."""
        kw.setdefault("zeros", None)
        kw.setdefault("pzeros", None)
        if "values" in kw or "pvalues" in kw:  # new values: a new derivation (unless the caller names it)
            kw.setdefault("ckey", None)
            kw.setdefault("zeroed", None)
        if "values" in kw:  # a new tensor (a pruned weight is the product w * mask, no longer a tied storage)
            kw.setdefault("tensor", None)
            kw.setdefault("share", None)
        if ("shape" in kw and tuple(kw["shape"]) != self.shape) or ("dtype" in kw and kw["dtype"] != self.dtype) \
                or "qscheme" in kw:
            kw.setdefault("tensor", None)
        if "shape" in kw:
            kw["shape"] = tuple(int(s) for s in kw["shape"])
        return dataclasses.replace(self, **kw)

    def empty(self, memo: dict) -> torch.Tensor:
        """The tensor torch.save would see: the original, or an allocated, never-touched one of the same form."""
        if self.tensor is not None:
            return self.tensor
        key = (self.share, self.shape, self.dtype, self.qscheme, self.as_param) if self.share is not None else id(self)
        if key in memo:  # one storage under several keys: each key holds its own view of it, as in a state_dict
            return memo[key].detach()
        if self.qscheme == "tensor":
            t = torch._empty_affine_quantized(self.shape, scale=1.0, zero_point=self.zero_point, dtype=self.dtype)
        elif self.qscheme == "channel":
            n = self.shape[self.axis]
            t = torch._empty_per_channel_affine_quantized(self.shape, scales=torch.ones(n, dtype=torch.float64),
                                                          zero_points=torch.zeros(n, dtype=torch.int64),
                                                          axis=self.axis, dtype=self.dtype)
        else:
            t = torch.empty(self.shape, dtype=self.dtype)
        if self.as_param:
            t = nn.Parameter(t, requires_grad=t.is_floating_point())
        memo[key] = t
        return t


@dataclass
class Layout:
    """The artefact's state_dict as entries: key -> Entry, a tuple of them, or a plain value (a dtype, None, a
    torch.ao packed object), with torch's ``_metadata`` (module versions, part of the pickle)."""

    entries: "OrderedDict[str, Any]"
    metadata: "OrderedDict[str, dict]"

    def copy(self) -> "Layout":
        return Layout(OrderedDict(self.entries), OrderedDict(self.metadata))

    def items(self):
        """(key, Entry) for every Entry, also those inside tuples (key, then key#i)."""
        for k, v in self.entries.items():
            if isinstance(v, Entry):
                yield k, v
            elif isinstance(v, tuple):
                for i, e in enumerate(v):
                    if isinstance(e, Entry):
                        yield f"{k}#{i}", e

    def state(self, memo: dict | None = None) -> OrderedDict:
        memo = {} if memo is None else memo
        with warnings.catch_warnings():  # torch warns on every quantized tensor it creates
            warnings.simplefilter("ignore")
            out: OrderedDict = OrderedDict((k, _materialize(v, memo)) for k, v in self.entries.items())
        out._metadata = OrderedDict((k, dict(v)) for k, v in self.metadata.items())  # type: ignore[attr-defined]
        return out

    def size_bytes(self) -> int:
        """Bytes of ``torch.save`` of the state_dict: what ``measure.size_bytes`` reports."""
        return saved_size(self.state())

    def sparse_size_bytes(self) -> int | None:
        """Bytes of ``compression_core.sparse``'s file of this state_dict; None when a value cannot be encoded
        there (a dynamic int8 LSTM's packed objects) or a zero count is unknown."""
        try:
            memo: dict = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                tensors = OrderedDict((k, _sparse_value(v, memo)) for k, v in self.entries.items())
        except _Unknown:
            return None

        meta = {k: dict(v) for k, v in self.metadata.items()}
        return saved_size({"format": FORMAT, "version": VERSION, "tensors": tensors, "metadata": meta})


def _materialize(v: Any, memo: dict) -> Any:
    if isinstance(v, Entry):
        return v.empty(memo)
    if isinstance(v, tuple):
        return tuple(_materialize(x, memo) for x in v)
    return v


class _Unknown(Exception):
    pass


def _plain_encoding(shape: tuple[int, ...], dtype: torch.dtype, nnz: int, t: torch.Tensor) -> dict:
    """``sparse._encode_tensor``'s choice and entry for a plain tensor with ``nnz`` non-zeros (empty tensors)."""
    numel = int(np.prod(shape)) if shape else 1
    if not (dtype.is_floating_point or dtype in (torch.int8, torch.uint8)) or numel == 0:
        return {"enc": "dense", "data": t}
    t = t.detach()  # as sparse._encode_tensor: a Parameter is stored as a plain tensor
    item = torch.empty((), dtype=dtype).element_size()
    rows = shape[0] if len(shape) >= 2 else 1
    cols = numel // rows
    col_bytes = 2 if cols <= 32767 else 4
    sizes = {"dense": numel * item, "bitmask": (numel + 7) // 8 + nnz * item,
             "csr": (rows + 1) * 4 + nnz * (col_bytes + item)}
    enc = min(sizes, key=lambda k: (sizes[k], k != "dense"))
    if enc == "dense":
        return {"enc": "dense", "data": t}
    values = torch.empty(nnz, dtype=dtype)
    if enc == "bitmask":
        return {"enc": "bitmask", "shape": list(shape), "bits": torch.empty((numel + 7) // 8, dtype=torch.uint8),
                "values": values}
    return {"enc": "csr", "shape": list(shape), "crow": torch.empty(rows + 1, dtype=torch.int32),
            "col": torch.empty(nnz, dtype=torch.int16 if col_bytes == 2 else torch.int32), "values": values}


def _sparse_value(v: Any, memo: dict) -> dict:
    if isinstance(v, Entry):
        zeros = v.stored_zeros()
        if zeros is None and (v.qscheme or v.dtype.is_floating_point or v.dtype in (torch.int8, torch.uint8)):
            raise _Unknown
        nnz = v.numel - (zeros or 0)
        if v.qscheme is None:
            return _plain_encoding(v.shape, v.dtype, nnz, v.empty(memo))
        code = _INT_CODES[v.dtype]
        codes = _plain_encoding(v.shape, code, nnz, torch.empty(v.shape, dtype=code))
        name = str(v.dtype).replace("torch.", "")
        if v.qscheme == "tensor":
            return {"enc": "q_tensor", "codes": codes, "scale": 1.0, "zero_point": int(v.zero_point), "dtype": name}
        n = v.shape[v.axis]
        return {"enc": "q_channel", "codes": codes, "scales": torch.empty(n, dtype=torch.float64),
                "zero_points": torch.empty(n, dtype=torch.int64), "axis": int(v.axis), "dtype": name}
    if isinstance(v, (tuple, list)):
        return {"enc": "tuple", "items": [_sparse_value(x, memo) for x in v]}
    if v is None:
        return {"enc": "none"}
    if isinstance(v, torch.dtype):
        return {"enc": "dtype", "name": str(v).replace("torch.", "")}
    raise _Unknown


# ------------------------------------------------------------------------------------------ from a model
def _owner(key: str) -> tuple[str, str]:
    mod, _, role = key.rpartition(".")
    return mod, role


def entry_of(key: str, t: torch.Tensor, param: bool) -> Entry:
    """The Entry of an existing tensor ``t`` stored under ``key`` (a parameter of layer_stats when ``param``)."""
    mod, role = _owner(key)
    q = None if not t.is_quantized else ("channel" if t.qscheme() in (torch.per_channel_affine,
                                                                          torch.per_channel_symmetric) else "tensor")
    return Entry(tuple(t.shape), t.dtype, layer=mod or key, pcount=t.numel() if param else 0, role=role,
                 qscheme=q, axis=int(t.q_per_channel_axis()) if q == "channel" else 0,
                 zero_point=int(t.q_zero_point()) if q == "tensor" else 0, as_param=isinstance(t, nn.Parameter),
                 tensor=t, share=t.untyped_storage().data_ptr() or None if not t.is_quantized else None,
                 values=(lambda t=t: t.int_repr()) if t.is_quantized else (lambda t=t: t.detach()))


def layout_of(model: nn.Module, state: dict | None = None, params: set[str] | None = None) -> Layout:
    """The Layout of ``model``'s shippable state_dict (prune masks folded), every tensor kept as it is.

    ``params``: keys counted as parameters by layer_stats (default: the model's parameters, masks folded, and the
    weights and biases of torch.ao quantized layers)."""

    state = shippable_state_dict(model) if state is None else state
    buffers = dict(model.named_buffers(remove_duplicate=False))

    def folded(n: str) -> str:
        return n[: -len("_orig")] if n.endswith("_orig") and n[: -len("_orig")] + "_mask" in buffers else n

    pids = {folded(n): id(t) for n, t in model.named_parameters(remove_duplicate=False)}
    if params is None:
        params = set(pids)
    own = params | set(buffers)  # module tensors (``model.to(dtype)`` converts them); the rest is made by state_dict
    entries: OrderedDict = OrderedDict()
    for key, v in state.items():
        if isinstance(v, torch.Tensor):
            param = key in params or v.is_quantized or (key.endswith(".bias") and _quantized_weight(state, key))
            entries[key] = dataclasses.replace(entry_of(key, v, param), fixed=key not in own, pid=pids.get(key))
        elif isinstance(v, tuple) and any(isinstance(x, torch.Tensor) for x in v):  # torch.ao packed (weight, bias)
            layer = key[: -len("._packed_params._packed_params")] if key.endswith("._packed_params._packed_params") \
                else key
            names = [f"{layer}.{('weight', 'bias')[i] if i < 2 else i}" for i in range(len(v))]
            entries[key] = tuple(dataclasses.replace(entry_of(n, x, True), fixed=True) if isinstance(x, torch.Tensor)
                                 else x for n, x in zip(names, v))
        else:
            entries[key] = v
    meta = getattr(state, "_metadata", None) or OrderedDict()
    return Layout(entries, OrderedDict((k, dict(m)) for k, m in meta.items()))


def _quantized_weight(state: dict, bias_key: str) -> bool:
    w = state.get(bias_key[: -len("bias")] + "weight")
    return isinstance(w, torch.Tensor) and w.is_quantized


__all__ = ["Entry", "Layout", "Unknowable", "entry_of", "layout_of", "saved_size", "zip_size"]
