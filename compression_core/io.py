"""Serialisation helpers: the bytes of a state_dict as a user would ship it (pruning masks folded into zeros),
and atomic file writes."""

from __future__ import annotations

import io
import os
import tempfile
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune


def state_dict_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def shippable_state_dict(model: nn.Module) -> dict:
    """The state_dict with torch.nn.utils.prune reparametrisations folded (``w = w_orig * w_mask``), as a user
    would save the model after ``prune.remove``: the mask is not shipped, the zeros are."""
    state = model.state_dict()
    out: OrderedDict = OrderedDict()
    meta = getattr(state, "_metadata", None)
    if meta is not None:
        out._metadata = meta  # type: ignore[attr-defined]  # keeps the file identical to torch.save(state_dict)
    for key, value in state.items():
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state:
            out[key[: -len("_orig")]] = value * state[key[: -len("_orig")] + "_mask"]
        elif key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state:
            continue
        else:
            out[key] = value
    return out


def has_mask(module: nn.Module, name: str = "weight") -> bool:
    """True if ``module.<name>`` is a torch.nn.utils.prune reparametrisation (``<name>_orig`` x ``<name>_mask``)."""
    return hasattr(module, name + "_mask") and hasattr(module, name + "_orig")


def fold_masks(model: nn.Module) -> nn.Module:
    """Make every torch.nn.utils.prune reparametrisation permanent in place (``w = w_orig * w_mask``)."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            name = getattr(hook, "_tensor_name", None)
            if name is not None and has_mask(module, name):
                torch_prune.remove(module, name)
    return model


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the whole new one, never a partial file:
    write a temporary file in the same folder, fsync it, then ``os.replace`` it over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
