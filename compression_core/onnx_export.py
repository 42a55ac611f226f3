"""Export any model the library makes to ONNX, written atomically.

Why: ONNX Runtime is what people deploy with, and on CPUs without int8 dot-product instructions its int8
kernels are much faster than torch's (see ``compression_core.ort``). Float models export as they are
(``onnx_io.export_float``: dynamic batch, one input ``input`` or one per key of a dict input, one output
``logits``, pruning masks folded in); quantized models export as what they are (``compression_core.ort_deploy``):
static int8 and QAT as ONNX QDQ with torch's own ranges, dynamic int8 as ONNX Runtime dynamic int8, int4 as ONNX
Runtime ``MatMulNBits``.
"""

from __future__ import annotations

import os

from torch import nn

from .errors import CompressionError
from .onnx_io import (INPUT_NAME, OUTPUT_NAME, PROTOBUF_LIMIT, OnnxFile, export_float, external_data_files,
                      input_names, onnx_size_bytes, save_onnx, strip_metadata)
from .ort_deploy import check_exportable, deploy_proto, needs_deploy


def to_onnx(model: nn.Module, example, opset: int | None = None):
    """The ONNX ModelProto of ``model`` (eval mode, dynamic batch), traced on ``example`` (any batch size; a
    tensor, or a dict of tensors passed as keyword arguments, named after its keys; integer inputs stay integer).

    Quantized models export as what they are: static int8 / QAT as ONNX QDQ with torch's own ranges, dynamic int8
    as ONNX Runtime dynamic int8, int4 as ``MatMulNBits``, a model that runs in ONNX Runtime as its own file
    (``compression_core.ort_deploy.deploy_proto``). The model is not modified. fp16/bf16 models take float inputs of
    their own dtype.
    """
    if needs_deploy(model):
        check_exportable(model)
        return deploy_proto(model, example, opset=opset)
    return export_float(model, example, opset)


def onnx_bytes(model: nn.Module, example, opset: int | None = None) -> bytes:
    """The serialized .onnx file of ``model`` with weights inline (models under 2 GiB)."""
    proto = to_onnx(model, example, opset)
    if proto.ByteSize() > PROTOBUF_LIMIT:
        raise CompressionError("export: model is over 2 GiB; write it to a file with export_onnx(..., "
                               "external_data=True)")
    return proto.SerializeToString()


def export_onnx(model: nn.Module, example, path: str | os.PathLike,
                external_data: bool | None = None, opset: int | None = None) -> OnnxFile:
    """Export ``model`` to ``path`` (.onnx, atomically; external data beside it when asked or needed)."""
    return save_onnx(to_onnx(model, example, opset), path, external_data)


__all__ = ["INPUT_NAME", "OUTPUT_NAME", "OnnxFile", "PROTOBUF_LIMIT", "check_exportable", "export_float",
           "export_onnx", "external_data_files", "input_names", "needs_deploy", "onnx_bytes", "onnx_size_bytes",
           "save_onnx", "strip_metadata", "to_onnx"]
