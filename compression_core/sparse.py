"""Sparse storage: a pruned model's weights saved so the file really shrinks with sparsity.

Pruned weights are dense zeros: ``torch.save`` of the state_dict does not shrink (FACTS.md). Here each float tensor
is stored in whichever of three forms is smallest: dense; a bitmask of the non-zeros (``numpy.packbits``, 1 bit per
weight) plus the non-zero values; or CSR (int32 row pointers, int16/int32 column indices, values). Values keep their
dtype, so decoding is exact. Quantized tensors (int8 models: Deep Compression's prune-then-quantize) store their
int8 codes the same way plus their scales and zero points; tuples and dtypes of quantized modules' state are kept. The file is ``torch.save`` of plain tensors, strings and ints: it loads with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import io
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from .errors import CompressionError
from .io import shippable_state_dict, fold_masks
from .technique import clone_model

FORMAT = "compression-lab-sparse"
VERSION = 1


def _encode_tensor(t: torch.Tensor) -> dict:
    """The smallest of dense / bitmask / CSR for one tensor (quantized: its int codes, plus scales)."""
    if t.is_quantized:
        return _encode_quantized(t)
    if not (t.is_floating_point() or t.dtype in (torch.int8, torch.uint8)) or t.numel() == 0:
        return {"enc": "dense", "data": t}
    t = t.detach().contiguous()
    flat = t.reshape(-1)
    nz = flat != 0
    nnz = int(nz.sum())
    item = t.element_size()
    rows = t.shape[0] if t.dim() >= 2 else 1
    cols = t.numel() // rows
    col_bytes = 2 if cols <= 32767 else 4
    sizes = {
        "dense": t.numel() * item,
        "bitmask": (t.numel() + 7) // 8 + nnz * item,
        "csr": (rows + 1) * 4 + nnz * (col_bytes + item),
    }
    enc = min(sizes, key=lambda k: (sizes[k], k != "dense"))
    shape = list(t.shape)
    if enc == "dense":
        return {"enc": "dense", "data": t}
    values = flat[nz].clone()  # (nnz,)
    if enc == "bitmask":
        bits = torch.from_numpy(np.packbits(nz.numpy()))  # (ceil(numel/8),) uint8
        return {"enc": "bitmask", "shape": shape, "bits": bits, "values": values}
    mat = t.reshape(rows, cols)  # (rows, cols)
    counts = (mat != 0).sum(1)  # (rows,)
    crow = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cumsum(0)]).to(torch.int32)  # (rows+1,)
    col = torch.nonzero(mat)[:, 1].to(torch.int16 if col_bytes == 2 else torch.int32)  # (nnz,) row-major order
    return {"enc": "csr", "shape": shape, "crow": crow, "col": col, "values": values}


def _encode_quantized(t: torch.Tensor) -> dict:
    """int codes sparse-encoded (a zero code decodes to zero), with the quantizer's parameters."""
    codes = _encode_tensor(t.int_repr())
    if t.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return {"enc": "q_tensor", "codes": codes, "scale": float(t.q_scale()), "zero_point": int(t.q_zero_point()),
                "dtype": str(t.dtype).replace("torch.", "")}
    if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return {"enc": "q_channel", "codes": codes, "scales": t.q_per_channel_scales(),
                "zero_points": t.q_per_channel_zero_points(), "axis": int(t.q_per_channel_axis()),
                "dtype": str(t.dtype).replace("torch.", "")}
    raise CompressionError(f"sparse: quantization scheme {t.qscheme()} cannot be sparse-encoded")


def _decode_value(entry: dict):
    """Inverse of ``_encode_value``."""
    enc = entry["enc"]
    if enc == "tuple":
        return tuple(_decode_value(e) for e in entry["items"])
    if enc == "none":
        return None
    if enc == "dtype":
        return getattr(torch, entry["name"])
    if enc == "q_tensor":
        return torch._make_per_tensor_quantized_tensor(_decode_tensor(entry["codes"]), entry["scale"],
                                                       entry["zero_point"])
    if enc == "q_channel":
        return torch._make_per_channel_quantized_tensor(_decode_tensor(entry["codes"]), entry["scales"],
                                                        entry["zero_points"], entry["axis"])
    return _decode_tensor(entry)


def _encode_value(key: str, value) -> dict:
    """A state_dict value: a tensor, or the tuples / dtypes / None that quantized modules keep in their state."""
    if isinstance(value, torch.Tensor):
        return _encode_tensor(value)
    if isinstance(value, (tuple, list)):
        return {"enc": "tuple", "items": [_encode_value(key, v) for v in value]}
    if value is None:
        return {"enc": "none"}
    if isinstance(value, torch.dtype):
        return {"enc": "dtype", "name": str(value).replace("torch.", "")}
    raise CompressionError(f"sparse: {key!r} is a {type(value).__name__}, not a tensor; this model's state "
                           f"(e.g. a dynamic int8 LSTM's packed weights) cannot be sparse-encoded")


def _decode_tensor(entry: dict) -> torch.Tensor:
    enc = entry["enc"]
    if enc == "dense":
        return entry["data"]
    shape = entry["shape"]
    values = entry["values"]
    numel = int(np.prod(shape)) if shape else 1
    out = torch.zeros(numel, dtype=values.dtype)
    if enc == "bitmask":
        nz = np.unpackbits(entry["bits"].numpy(), count=numel).astype(bool)
        out[torch.from_numpy(nz)] = values
        return out.reshape(shape)
    if enc == "csr":
        rows = shape[0] if len(shape) >= 2 else 1
        cols = numel // rows
        crow = entry["crow"].long()
        row_of = torch.repeat_interleave(torch.arange(rows), crow[1:] - crow[:-1])  # (nnz,)
        out[row_of * cols + entry["col"].long()] = values
        return out.reshape(shape)
    raise CompressionError(f"sparse file: unknown tensor encoding {enc!r}; expected dense, bitmask or csr")


def encode_state(state: dict) -> bytes:
    """Bytes of the sparse file of a (mask-free) state_dict."""
    tensors = OrderedDict()
    for key, value in state.items():
        tensors[key] = _encode_value(key, value)
    # module versions: quantized modules read their state by format version (torch's state_dict._metadata)
    meta = {k: dict(v) for k, v in (getattr(state, "_metadata", None) or {}).items()}
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, "tensors": tensors, "metadata": meta}, buf)
    return buf.getvalue()


def encode_sparse(model: nn.Module) -> bytes:
    """The sparse file of ``model``'s shippable state_dict (prune masks folded in)."""
    return encode_state(shippable_state_dict(model))


def decode_sparse(data: bytes) -> OrderedDict:
    """The dense state_dict stored in a sparse file (masks folded: keys ``weight``, not ``weight_orig``)."""
    try:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise CompressionError(f"sparse file: cannot read it ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CompressionError(f"sparse file: not a {FORMAT} file")
    if obj.get("version") != VERSION:
        raise CompressionError(f"sparse file: version {obj.get('version')!r} is not supported; expected {VERSION}")
    try:
        out = OrderedDict((k, _decode_value(v)) for k, v in obj["tensors"].items())
        if obj.get("metadata"):
            out._metadata = OrderedDict(obj["metadata"])  # type: ignore[attr-defined]
        return out
    except CompressionError:
        raise
    except Exception as e:  # noqa: BLE001 - a malformed entry is the same user error
        raise CompressionError(f"sparse file: malformed entry ({type(e).__name__}: {e})") from None


def load_sparse(data: bytes, skeleton: nn.Module) -> nn.Module:
    """A copy of ``skeleton`` (same architecture; masks, if any, are folded away) with the weights of ``data``."""
    model = fold_masks(clone_model(skeleton))
    model.load_state_dict(decode_sparse(data))
    return model.eval()


def sparse_size_bytes(model: nn.Module) -> int:
    """Bytes of the sparse file of ``model``."""
    return len(encode_sparse(model))
