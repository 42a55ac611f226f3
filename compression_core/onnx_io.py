"""ONNX files: the float export (``torch.onnx.export(..., dynamo=True)``) every other export builds on, and .onnx
files on disk (written atomically, weights inline or as external data beside the graph, sizes that count both).

The exported graph has a dynamic batch dimension, one input ``input`` (or one per key of a dict input, integer ids
kept integer) and one output ``logits``. torch.nn.utils.prune masks are folded into the weights first (the shipped
zeros, not the mask). Compressed models export through ``compression_core.onnx_export.to_onnx``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from . import inputs as I
from .errors import CompressionError
from .io import atomic_write_bytes
from .linear_like import conv1d_names, convert_to_linear
from .technique import clone_model

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
# protobuf cannot serialise a message over 2 GiB: larger models must keep their weights in an external file
PROTOBUF_LIMIT = 2**31 - 1
_EXTERNAL_THRESHOLD = 1_800_000_000


@dataclass(frozen=True)
class OnnxFile:
    """An exported model on disk: the .onnx file and its external-data file (None when weights are inline)."""

    path: Path
    data_path: Path | None = None

    @property
    def size_bytes(self) -> int:
        """Bytes a user ships: the .onnx file plus its external data."""
        return onnx_size_bytes(self.path)


def _folded(model: nn.Module) -> nn.Module:
    """The model itself, or a copy with torch.nn.utils.prune reparametrisations removed (weights = w * mask) and
    transformers' Conv1D layers as the equivalent nn.Linear: Conv1D's ``addmm`` would export as a Gemm on a 2-D view,
    which ONNX Runtime's MatMulNBits does not take; a Linear on (B, T, in) exports as MatMul."""
    pruned = [(m, h._tensor_name) for m in model.modules() for h in m._forward_pre_hooks.values()
              if isinstance(h, prune.BasePruningMethod)]
    if not pruned and not conv1d_names(model):
        return model
    copy = clone_model(model)
    convert_to_linear(copy)
    for m in copy.modules():
        for h in list(m._forward_pre_hooks.values()):
            if isinstance(h, prune.BasePruningMethod):
                prune.remove(m, h._tensor_name)
    return copy


@contextlib.contextmanager
def _quiet():
    """The exporter logs and warns a lot (torchvision ops skipped, deprecations): keep the CLI output readable."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def input_names(example) -> list[str]:
    """The ONNX input names for an example batch: the dict's keys (a tokenizer's output), else ``input``."""
    return [str(k) for k in example] if I.is_dict(example) else [INPUT_NAME]


def strip_metadata(proto) -> None:
    """Drop the exporter's per-node provenance (stack traces, name scopes) in place: on a small model it is half
    the file, and nothing at run time reads it."""
    for node in proto.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    proto.graph.doc_string = ""


def export_float(model: nn.Module, example, opset: int | None = None, keep_metadata: bool = False):
    """The ONNX ModelProto of a float (or fp16/bf16) ``model``, dynamic batch, traced on ``example`` (a tensor or
    a dict of tensors passed as keyword arguments; integer inputs stay integer)."""
    src = _folded(model)
    was_training = src.training
    src.eval()
    x = I.cast_floats(example, I.input_dtype(src))
    if I.n_items(x) < 2:  # torch.export specialises a batch of 1; trace on 2 so the batch stays dynamic
        x = I.head(x, 2)
    args, kwargs = I.example_args(x)
    batch = torch.export.Dim("batch")
    names = input_names(x)
    dynamic = {k: {0: batch} for k in kwargs} if kwargs else ({0: batch},)
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                src, args, kwargs=kwargs or None, dynamo=True, input_names=names, output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic, opset_version=opset, optimize=True, verbose=False, report=False,
            )
    except CompressionError:
        raise
    except Exception as e:  # the exporter's messages are pages long: keep the first meaningful line
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise CompressionError(f"export: torch.onnx.export(dynamo=True) failed for {type(model).__name__}: "
                               f"{type(e).__name__}: {first[:300]}") from e
    finally:
        src.train(was_training)
    proto = program.model_proto
    if not keep_metadata:
        strip_metadata(proto)
    return proto


def save_onnx(proto, path: str | os.PathLike, external_data: bool | None = None) -> OnnxFile:
    """Write a ModelProto to ``path`` atomically; weights go to ``<name>.data`` beside it when ``external_data``
    (None: only when the model is too big for one protobuf). Readers never see a partial file: everything is
    written into a temporary folder beside the target, then moved with ``os.replace`` (data first)."""
    import onnx  # lazy: onnx takes about a second to import and only file work needs it

    path = Path(path)
    if path.suffix != ".onnx":
        raise CompressionError(f"--onnx: the file name must end in .onnx, got {path.name!r}")
    if external_data is None:
        external_data = proto.ByteSize() > _EXTERNAL_THRESHOLD
    if not external_data:
        atomic_write_bytes(path, proto.SerializeToString())
        stale = path.with_name(path.name + ".data")
        if stale.exists():
            stale.unlink()  # a previous export with external data: it no longer belongs to this file
        return OnnxFile(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    location = path.name + ".data"
    tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        proto = _copy_proto(proto)  # save_model rewrites tensor fields in place: leave the caller's proto alone
        onnx.save_model(proto, tmpdir / path.name, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=location, size_threshold=0)
        data_tmp = tmpdir / location
        umask = os.umask(0)
        os.umask(umask)
        for f in tmpdir.iterdir():
            os.chmod(f, 0o666 & ~umask)  # the usual permissions, not the temporary folder's private ones
        if data_tmp.exists():
            os.replace(data_tmp, path.with_name(location))
        os.replace(tmpdir / path.name, path)
    finally:
        for f in tmpdir.iterdir():
            f.unlink()
        tmpdir.rmdir()
    data_path = path.with_name(location)
    return OnnxFile(path, data_path if data_path.exists() else None)


def _copy_proto(proto):
    import onnx  # lazy: onnx takes about a second to import

    if proto.ByteSize() <= PROTOBUF_LIMIT:
        return onnx.ModelProto.FromString(proto.SerializeToString())
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    return out


def external_data_files(path: str | os.PathLike) -> list[Path]:
    """The external-data files a .onnx file refers to (without loading the weights)."""
    import onnx  # lazy: onnx takes about a second to import

    path = Path(path)
    proto = onnx.load_model(str(path), load_external_data=False)
    files = set()
    for t in _all_tensors(proto.graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            for kv in t.external_data:
                if kv.key == "location":
                    files.add(path.parent / kv.value)
    return sorted(files)


def _all_tensors(graph):
    """Every TensorProto in a graph: initializers, constant attributes, and those of subgraphs (If/Loop/Scan)."""
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def onnx_size_bytes(path: str | os.PathLike) -> int:
    """Bytes of a .onnx file plus the external-data files it refers to: what a user ships."""
    path = Path(path)
    return path.stat().st_size + sum(f.stat().st_size for f in external_data_files(path))


__all__ = ["INPUT_NAME", "OUTPUT_NAME", "OnnxFile", "PROTOBUF_LIMIT", "export_float", "external_data_files",
           "input_names", "onnx_size_bytes", "save_onnx", "strip_metadata"]
