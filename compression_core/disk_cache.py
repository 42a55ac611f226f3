"""A content-addressed disk cache for expensive derived data (tokenized splits, a baseline's measured numbers,
sensitivity curves): reused across processes and server restarts, never trusted blindly.

Why: loading a real model is quick, but what is derived from it is not (minilm-topics: its baseline measured on
the test set with its confusion matrix and fidelity took ~11 s, a pruning sweep minutes). Each entry is keyed by
the CONTENT it was computed from (``model_digest``: every tensor of the state dict; ``tensor_digest`` of the data;
``source_digest`` of the code that computes it; the settings), so a changed weight, split or function is a miss,
never a stale hit.

Safety: an entry is one safetensors file (tensors plus a JSON metadata string: no pickle is ever loaded from the
cache) and a ``.sha256`` beside it written after it; a read checks the hash of the bytes and the key stored inside
before parsing, and an entry that fails any check (truncated, edited, another key) is deleted and reported as a
miss, so the caller rebuilds it. Writes go to a temporary file in the same folder and are renamed into place
(atomic). The folder is the server user's (``COMPRESSION_LAB_CACHE``, default ``~/.cache/compression-lab``),
never a place a browser user can write; a cache that cannot be written (read-only disk) only costs the speed-up.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import struct
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .io import atomic_write_bytes

CACHE_ENV = "COMPRESSION_LAB_CACHE"
FORMAT = "compression-lab-cache/1"  # bumped when the entry layout changes (old entries are then misses)
MAX_HEADER = 16 * 2**20  # a safetensors header larger than this is not ours


def cache_root() -> Path:
    """The cache folder: ``$COMPRESSION_LAB_CACHE``, else ``~/.cache/compression-lab``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "compression-lab"


def enabled() -> bool:
    """False when ``COMPRESSION_LAB_CACHE`` is ``off`` (or ``0``/``none``): every lookup is then a miss."""
    return os.environ.get(CACHE_ENV, "").strip().lower() not in ("off", "0", "none", "false")


# ------------------------------------------------------------------------------------------------ digests
def _canonical(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def digest(*parts: Any) -> str:
    """sha256 (hex) of JSON-able parts (dict order does not matter; anything else by its repr)."""
    text = json.dumps(_canonical(list(parts)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _update_tensor(h, t: torch.Tensor) -> None:
    t = t.detach()
    if t.is_quantized:
        t = t.dequantize()
    if t.layout != torch.strided:
        t = t.to_dense()
    t = t.cpu().contiguous()
    h.update(f"{t.dtype}:{tuple(t.shape)}:".encode())
    if t.numel():
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool
                 else t.to(torch.uint8).numpy().tobytes())


def tensor_digest(obj: Any) -> str:
    """sha256 (hex) of tensors (dtype, shape and bytes) in any nesting of dicts, lists and tuples."""
    h = hashlib.sha256()

    def walk(o: Any) -> None:
        if isinstance(o, torch.Tensor):
            _update_tensor(h, o)
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                h.update(f"<{k}>".encode())
                walk(o[k])
        elif isinstance(o, (list, tuple)):
            h.update(f"[{len(o)}]".encode())
            for v in o:
                walk(v)
        else:
            h.update(repr(o).encode())

    walk(obj)
    return h.hexdigest()


def model_digest(model: torch.nn.Module) -> str:
    """sha256 (hex) of a model's class and every tensor of its state dict (parameters and buffers)."""
    sd = model.state_dict()
    return digest(f"{type(model).__module__}.{type(model).__qualname__}",
                  tensor_digest({k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}))


def source_digest(*objs: Any) -> str:
    """sha256 (hex) of the source files of modules, functions or classes (or paths): the code version of an entry.
    An object without a source file counts by its qualified name."""
    h = hashlib.sha256()
    for o in objs:
        path = Path(o) if isinstance(o, (str, Path)) else None
        if path is None:
            try:
                path = Path(inspect.getsourcefile(o) or "")
            except (TypeError, OSError):
                path = None
        if path is not None and path.is_file():
            h.update(path.read_bytes())
        else:
            h.update(repr(getattr(o, "__qualname__", o)).encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ entries
def _header_metadata(raw: bytes) -> dict:
    """The ``__metadata__`` of safetensors bytes (parsed from the header alone, bounded)."""
    if len(raw) < 8:
        raise ValueError("truncated")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > MAX_HEADER or 8 + n > len(raw):
        raise ValueError("bad header length")
    header = json.loads(raw[8:8 + n])
    return dict(header.get("__metadata__") or {})


class DiskCache:
    """One kind of entry (``kind``: a folder name) under ``root`` (default ``cache_root()``):
    ``load(key) -> (tensors, meta) | None``, ``save(key, tensors, meta)``, ``get_or_build(key, build)``."""

    def __init__(self, kind: str, root: str | Path | None = None) -> None:
        if not kind.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"kind: letters, digits, - and _ only, got {kind!r}")
        self.kind = kind
        self.root = Path(root) if root is not None else None
        self.hits = self.misses = self.rejected = 0

    def folder(self) -> Path:
        return (self.root if self.root is not None else cache_root()) / self.kind

    def path(self, key: str) -> Path:
        if not (len(key) == 64 and all(c in "0123456789abcdef" for c in key)):
            raise ValueError("key: a sha256 hex digest (use disk_cache.digest)")
        return self.folder() / f"{key}.safetensors"

    def _drop(self, path: Path) -> None:
        for p in (path, path.with_suffix(".sha256")):
            try:
                p.unlink()
            except OSError:
                pass

    def load(self, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The entry ``key`` (tensors, JSON metadata) or None (absent, disabled, or failing a check: then deleted)."""
        if not enabled():
            return None
        path = self.path(key)
        try:
            want = path.with_suffix(".sha256").read_text().strip()
            raw = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        try:
            if hashlib.sha256(raw).hexdigest() != want:
                raise ValueError("hash mismatch")
            meta = _header_metadata(raw)
            if meta.get("format") != FORMAT or meta.get("key") != key or meta.get("kind") != self.kind:
                raise ValueError("not this entry")
            tensors = st_load(raw)
            value = json.loads(meta.get("meta", "{}"))
        except Exception:  # anything wrong with the bytes: never trusted, rebuilt by the caller
            self.rejected += 1
            self._drop(path)
            return None
        self.hits += 1
        return tensors, value

    def save(self, key: str, tensors: dict[str, torch.Tensor] | None = None, meta: Any = None) -> Path | None:
        """Write the entry atomically (temporary file + rename, then its hash); None when it cannot be written."""
        if not enabled():
            return None
        path = self.path(key)
        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in (tensors or {}).items()}
        raw = st_save(tensors, metadata={"format": FORMAT, "kind": self.kind, "key": key,
                                         "meta": json.dumps(meta, sort_keys=True)})
        try:
            atomic_write_bytes(path, raw)
            atomic_write_bytes(path.with_suffix(".sha256"), hashlib.sha256(raw).hexdigest().encode())
        except OSError:
            return None
        return path

    def get_or_build(self, key: str, build: Callable[[], tuple[dict[str, torch.Tensor], Any]]
                     ) -> tuple[dict[str, torch.Tensor], Any, bool]:
        """(tensors, meta, hit): the stored entry, or ``build()`` saved and returned."""
        got = self.load(key)
        if got is not None:
            return got[0], got[1], True
        tensors, meta = build()
        self.save(key, tensors, meta)
        return tensors, meta, False


__all__ = ["CACHE_ENV", "DiskCache", "cache_root", "digest", "enabled", "model_digest", "source_digest",
           "tensor_digest"]
