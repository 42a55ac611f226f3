"""Heavy dashboard work (training, QAT, distillation, lottery tickets, sensitivity, search, latency) as jobs in a pool
of worker processes, so one student's job never runs under the page server's GIL.

    runner().submit(kind, payload, session_id) -> job id
    runner().status(job_id) -> {state, queue_position, progress, message, result | error, ...}
    runner().cancel(job_id, session_id)

Workers are spawned processes (no forked torch state), sized to the machine (one core left to the page server,
and no more workers than the memory limit allows), started lazily, each running one job at a time at a lower CPU
priority (``nice``) than the page server. A worker rebuilds the workload from its reference string
(``compression_core.resolve_workload``, cached per worker) and runs the library (``apply_recipe``, ``sensitivity``,
``fit_budget``, ``search``, ``advise``, ``latency``, ``faster_path``, ``deploy_onnx`` for downloads); results come back as plain data (a
compressed model as a bundle, the library's own file format, rebuilt in the server with ``jobs.recipe_result``).

Limits per job: wall time (a watchdog in the server kills the worker) and memory (``RLIMIT_AS`` set in the worker
before each job, plus the watchdog on the worker's RSS). A job that hits one ends with ONE line naming the limit and
the server flag that changes it; the worker is replaced and the server lives on. Cancel removes a queued job or kills
its running worker. Each worker talks to the server over its own pipe (not one shared queue): killing a worker in the
middle of a message can then never leave a lock held that the other workers need.

Server flags (after ``--`` on ``streamlit run dashboard/app.py -- ...``, or environment variables):
``--job-time-limit SECONDS`` (COMPRESSION_LAB_JOB_TIME_LIMIT, default 300), ``--job-memory-limit MB``
(COMPRESSION_LAB_JOB_MEMORY_MB, default 2048), ``--job-workers N`` (COMPRESSION_LAB_JOB_WORKERS, default: cores - 1).

- ``limits.py``: the server flags and ``Limits``
- ``pool.py``: ``JobRunner`` (queue, dispatch, watchdog, cancel, results kept) and ``runner()``, the server's one
- ``worker.py``: one worker process, the server's handle on it and its own loop
- ``tasks.py``: the job kinds (``KINDS``) and ``recipe_result``
- ``panel.py``: the page's side (Streamlit): ``job_panel``, ``training_panel``

This package imports neither streamlit nor torch at import time: the workers import it to find their entry point.
"""

from .limits import JobRefused, Limits, server_flag
from .panel import job_panel, training_panel
from .pool import CANCELLED, DONE, ERROR, FINISHED, QUEUED, RUNNING, Job, JobRunner, runner
from .tasks import (KINDS, recipe_result, run_advise, run_allocate, run_export, run_faster, run_fit, run_latency,
                    run_measure_bundle, run_recipe, run_search, run_sensitivity, run_sleep)
from .worker import worker_entry, worker_main

__all__ = [
    "CANCELLED", "DONE", "ERROR", "FINISHED", "KINDS", "QUEUED", "RUNNING", "Job", "JobRefused", "JobRunner", "Limits",
    "job_panel", "recipe_result", "run_advise", "run_allocate", "run_export", "run_faster", "run_fit", "run_latency",
    "run_measure_bundle", "run_recipe", "run_search", "run_sensitivity", "run_sleep", "runner", "server_flag",
    "training_panel", "worker_entry", "worker_main",
]
