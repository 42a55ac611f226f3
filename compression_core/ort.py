"""ONNX Runtime beside torch: the public names, from the modules that hold them.

Why: int8 in torch (``torch.ao`` dynamic/static, torchao) is often no faster than fp32 on a CPU without int8
dot-product instructions, while ONNX Runtime's int8 kernels are. One way in for techniques: ``engine="onnxruntime"``
on the registered int8 and int4 configs (``DynamicInt8Config``, ``StaticInt8Config``, ``QATConfig``,
``Int4Config``) returns an ``OrtModule``, an ``nn.Module`` whose state is the .onnx file and whose forward runs an
ORT session, so measure, recipes, bundles and the dashboard handle it like any model.

- ``ort_session``: sessions with 1 intra-op thread, ``feed`` (a batch as a session's inputs), predict, accuracy,
  latency.
- ``ort_quantize``: ORT's own int8 (dynamic; static QDQ calibrated on data) and int4 ``MatMulNBits`` of a .onnx file.
- ``ort_nodes``: which ONNX nodes a layer became, Gemm as MatMul + Add, per-initializer stats.
- ``ort_engine``: ``OrtModule`` and the ``engine="onnxruntime"`` backends the quantize handlers call.
- ``ort_deploy``: any compressed model as the .onnx file that deploys it as what it is; ``fastest_engine``.
- ``ort_measure``: ``measure_ort``, ``measure_in`` and ``runtime_comparison`` (fp32 and int8 in both runtimes, now).

The modules depend one way: session <- nodes, quantize <- engine <- the quantize package's handlers <- deploy <-
measure <- this module (which only the package's public API and the CLI import), so a handler never imports what
imports it. CPU features (VNNI and the like) are in ``compression_core.cpu``.
"""

from .ort_deploy import check_exportable, deploy_onnx, deploy_proto, fastest_engine
from .ort_engine import OrtModule, ort_int4_step, ort_int8_step
from .ort_measure import (RUNTIMES, fastest_int8, measure_in, measure_ort, runtime_comparison, torch_dynamic_int8,
                          torch_static_int8)
from .ort_nodes import gemm_to_matmul, layer_nodes, onnx_layer_stats
from .ort_quantize import ort_int4, ort_quantize, resolve_reduce_range
from .ort_session import OnnxLike, feed, ort_accuracy, ort_latency, ort_predict, session

__all__ = ["OnnxLike", "OrtModule", "RUNTIMES", "check_exportable", "deploy_onnx", "deploy_proto", "fastest_engine",
           "fastest_int8", "feed", "gemm_to_matmul", "layer_nodes", "measure_in", "measure_ort", "onnx_layer_stats",
           "ort_accuracy", "ort_int4", "ort_int4_step", "ort_int8_step", "ort_latency", "ort_predict", "ort_quantize",
           "resolve_reduce_range", "runtime_comparison", "session", "torch_dynamic_int8", "torch_static_int8"]
