"""Compression Lab's library: pure functions over ``torch.nn.Module`` that compress and measure models.

One verb per family, the config's type picks the algorithm; techniques never modify their input.
"""

from .errors import CompressionError
from .workload import (
    ACCURACY,
    AGREEMENT,
    Metric,
    Split,
    Workload,
    register_workload,
    registered_workloads,
    resolve_workload,
    workload_names,
)
from .io import atomic_write_bytes, shippable_state_dict, state_dict_bytes
from .measure import (
    LayerStats,
    ModelStats,
    accuracy,
    confusion_matrix,
    effective_weight,
    evaluate,
    flops,
    latency,
    layer_stats,
    measure,
    predict,
    size_bytes,
)
from .technique import (
    StepConfig, StepContext, apply_step, clone_model, configs_of_family, register, registered_configs, unregister,
)
from .targets import resolve_targets
from .train import FineTuneConfig, fine_tune
from .prune import (
    LayerPruneConfig,
    LotteryTicketConfig,
    LowRankConfig,
    ShrinkConfig,
    SlimmingConfig,
    StructuredPruneConfig,
    ThresholdPruneConfig,
    UnstructuredPruneConfig,
    prune,
)
from .sparse import decode_sparse, encode_sparse, load_sparse, sparse_size_bytes

__all__ = [
    "CompressionError", "FineTuneConfig", "LayerStats", "ModelStats", "StepConfig", "StepContext",
    "accuracy", "apply_step", "clone_model", "atomic_write_bytes", "confusion_matrix", "fine_tune", "flops", "latency",
    "layer_stats", "measure", "predict", "register", "registered_configs", "resolve_targets", "shippable_state_dict",
    "size_bytes", "state_dict_bytes", "effective_weight", "configs_of_family", "unregister",
]
__all__ += [
    "ACCURACY", "AGREEMENT", "Metric", "Split", "Workload", "evaluate", "register_workload", "registered_workloads",
    "resolve_workload", "workload_names",
]
__all__ += [
    "LayerPruneConfig", "LotteryTicketConfig", "LowRankConfig", "ShrinkConfig", "SlimmingConfig", "StructuredPruneConfig", "ThresholdPruneConfig",
    "UnstructuredPruneConfig", "decode_sparse", "encode_sparse", "load_sparse", "prune", "sparse_size_bytes",
]
from .quantize import (
    DynamicInt8Config,
    EmbeddingInt8Config,
    FakeQuantConfig,
    HalfPrecisionConfig,
    Int4Config,
    QATConfig,
    StaticInt8Config,
    WeightOnlyConfig,
    quantize,
)

__all__ += [
    "DynamicInt8Config", "EmbeddingInt8Config", "FakeQuantConfig", "HalfPrecisionConfig", "Int4Config", "QATConfig", "StaticInt8Config",
    "WeightOnlyConfig", "quantize",
]
from .onnx_export import OnnxFile, check_exportable, export_onnx, onnx_bytes, onnx_size_bytes, save_onnx, to_onnx
from .ort import (
    OrtModule,
    deploy_onnx,
    fastest_engine,
    measure_in,
    measure_ort,
    ort_accuracy,
    ort_latency,
    ort_predict,
    runtime_comparison,
)

__all__ += [
    "OnnxFile", "OrtModule", "deploy_onnx", "fastest_engine", "check_exportable", "export_onnx", "measure_in",
    "measure_ort", "onnx_bytes", "onnx_size_bytes", "ort_accuracy", "ort_latency", "ort_predict",
    "runtime_comparison", "save_onnx", "to_onnx",
]
from .sensitivity import HeadImportance, LayerCurve, Sensitivity, sample_sensitivity, sensitivity, workload_sensitivity
from .budget import BudgetFit, FitBudgetConfig, budget_config, explicit_recipe, fit_budget, fitted_recipe

__all__ += [
    "BudgetFit", "FitBudgetConfig", "HeadImportance", "LayerCurve", "Sensitivity", "budget_config", "explicit_recipe",
    "fit_budget", "fitted_recipe", "sample_sensitivity", "sensitivity", "workload_sensitivity",
]
from .distill import DistillConfig, ReinitConfig, distill, distillation_loss
from .recipe import (  # Recipe is built when asked (see __getattr__ below)
    RecipeResult, StepReport, apply_recipe, load_recipe, recipe_class, recipe_schema, recipe_to_yaml, validate_recipe,
)
from .bundle import load_bundle, save_bundle

__all__ += [
    "DistillConfig", "Recipe", "RecipeResult", "ReinitConfig", "StepReport", "apply_recipe", "distill",
    "distillation_loss", "load_bundle", "load_recipe", "recipe_schema", "recipe_to_yaml", "save_bundle",
    "validate_recipe",
]
from .cost import Cost, estimate_cost, prepare_estimates  # size, parameters and FLOPs, computed without applying

__all__ += ["Cost", "estimate_cost", "prepare_estimates"]
from .layer_cache import LayerCache  # compressed layers kept per (layer, setting): apply_recipe(..., layers=cache)

__all__ += ["LayerCache"]
from .faster import FasterPath, PathTiming, faster_path  # slower than fp32? what is faster here, timed in one run

__all__ += ["FasterPath", "PathTiming", "faster_path"]
from .estimate_metric import (  # the metric of a configuration estimated from per-layer sensitivity curves
    MetricCurves, MetricEstimate, estimate_metric, estimate_quality, metric_curves)

__all__ += ["MetricCurves", "MetricEstimate", "estimate_metric", "estimate_quality", "metric_curves"]


def __getattr__(name: str):
    """``Recipe`` is built when asked, from the techniques registered now (a plugin registered after this package
    was imported is a step kind too)."""
    if name == "Recipe":
        return recipe_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
