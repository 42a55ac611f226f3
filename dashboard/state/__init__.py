"""Shared dashboard state: the workloads on offer, cached baselines and results, the session's history, error lines.

Models come from the library only: ``compression_core.workload_names()`` (the samples and anything registered) plus
the workloads named on the command line (``streamlit run dashboard/app.py -- --workload REF``, repeatable). A
baseline is a ``compression_core.Workload``, cached once per process (``st.cache_resource``) and never mutated:
every technique copies its input. Results are cached by (model, recipe). A user's history lives in
``st.session_state``. The dashboard holds no compression logic: it builds a recipe and calls ``apply_recipe``.

- ``workloads.py``: the models on offer, their facts and metric wording, one-line errors, CPU facts
- ``recipes.py``: recipes as plain data (key, YAML, upload parsing)
- ``lru.py``: the small process-wide LRU the caches below use
- ``results.py``: compressed models and their measured views, cached per process
- ``previews.py``: big models measured on a preview subset first, the whole test set in the background
- ``estimates.py``: a move's computed size and estimated metric (sensitivity curves from a background job, on disk)
- ``stages.py``: the server-side log of which stage (estimate, preview, full test set) each session was shown
- ``runtimes.py``: ONNX Runtime views (size, metric, peak RAM); latency is timed in a job (``jobs.run_latency``)
- ``figures.py``: figures built once per process and served as finished data
- ``session.py``: the session's history rows and the Experiments page's tables
"""

import compression_core  # noqa: F401  (imports every technique package: they register themselves)

from .figures import Ready, figure
from .lru import LRU
from .previews import baseline_preview_metric, preview_size, preview_view
from .recipes import MAX_RECIPE_UPLOAD_BYTES, parse_recipe_text, recipe_dict, recipe_key, to_yaml
from .results import (adopt_job_result, applied, baseline_view, compressed, extra_view, is_applied, layer_weights,
                      model_of, result_view, run_recipe)
from .runtimes import RUNTIMES, ort_module, ort_view
from .session import (FIELD_LABELS, describe, experiments_frame, history, latency_frame, record, record_latency,
                      smallest_bytes)
from .workloads import (DEFAULT_MODEL, baseline, cli_references, cpu, default_index, delta_color, facts, item_name,
                        label, metric_axis, metric_delta, metric_text, metric_title, models, one_line,
                        reference_errors, tensor_input)

__all__ = [
    "DEFAULT_MODEL", "FIELD_LABELS", "LRU", "MAX_RECIPE_UPLOAD_BYTES", "RUNTIMES", "Ready", "adopt_job_result",
    "applied", "baseline", "baseline_preview_metric", "baseline_view", "cli_references", "compressed", "cpu",
    "default_index", "delta_color", "describe", "experiments_frame", "extra_view", "facts", "figure",
    "history", "is_applied", "item_name", "label", "latency_frame", "layer_weights", "metric_axis",
    "metric_delta", "metric_text", "metric_title", "model_of", "models", "one_line", "ort_module", "ort_view",
    "parse_recipe_text", "preview_size",
    "preview_view", "record", "record_latency", "recipe_dict", "recipe_key", "reference_errors", "result_view",
    "run_recipe", "smallest_bytes", "tensor_input", "to_yaml",
]

from . import stages  # noqa: E402  (the stage log: Explore writes it, tests and benchmarks read it)
from .estimates import cost_view, curves_status, estimate_view, estimated_stats, with_cost  # noqa: E402
from .previews import (READY, INTERRUPTED, TIMED_OUT, live_view, newer_stage, prepare_moves,  # noqa: E402
                       wait_for_stage)

__all__ += ["INTERRUPTED", "READY", "TIMED_OUT", "cost_view", "curves_status", "estimate_view", "estimated_stats",
            "live_view", "newer_stage", "prepare_moves", "stages", "wait_for_stage", "with_cost"]
