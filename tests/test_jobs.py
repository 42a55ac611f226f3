"""The dashboard's job runner: worker processes with time and memory limits, queue positions, progress, cancel, and
one-line errors naming the server flag; the server (this process) lives on; a recipe job's result matches the
library's own ``apply_recipe`` and its model is rebuilt here from the bundle."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dashboard"))

import jobs  # noqa: E402


@pytest.fixture(scope="module")
def light():
    """One worker that does not import torch (diagnostic jobs only): starts in well under a second."""
    r = jobs.JobRunner(jobs.Limits(time_s=3.0, memory_mb=150, workers=1, warm=False, per_session=3))
    yield r
    r.shutdown()


def test_queue_positions_progress_and_results(light):
    a = light.submit("sleep", {"seconds": 0.6}, "alice")
    b = light.submit("sleep", {"seconds": 0.2}, "bob")
    c = light.submit("sleep", {"seconds": 0.21}, "carol")
    sb, sc = light.status(b), light.status(c)
    assert sb["state"] == "queued" and sc["state"] == "queued"
    assert sc["queue_position"] == sb["queue_position"] + 1 and sb["queue_position"] >= 1
    assert "position" in sb["message"]
    seen_progress = 0.0
    deadline = time.monotonic() + 30
    while light.status(a)["state"] != "done" and time.monotonic() < deadline:
        s = light.status(a)
        if s["state"] == "running":
            seen_progress = max(seen_progress, s["progress"])
        time.sleep(0.02)
    assert light.status(a)["result"]["slept"] == 0.6
    assert 0 < seen_progress <= 1  # progress reached the server while the job ran
    assert light.wait(b, 30)["state"] == "done" and light.wait(c, 30)["state"] == "done"


def test_time_limit_ends_the_job_in_one_line_naming_the_flag(light):
    j = light.submit("sleep", {"seconds": 30}, "dave")
    s = light.wait(j, 30)
    assert s["state"] == "error"
    assert "time limit" in s["error"] and "--job-time-limit" in s["error"] and "\n" not in s["error"]
    after = light.wait(light.submit("sleep", {"seconds": 0.05}, "dave"), 30)  # a fresh worker serves the next job
    assert after["state"] == "done"


def test_memory_limit_ends_the_job_in_one_line_naming_the_flag(light):
    rss0 = jobs.worker._rss_mb(os.getpid())
    s = light.wait(light.submit("allocate", {"mb": 2000}, "erin"), 30)
    assert s["state"] == "error"
    assert "memory limit" in s["error"] and "--job-memory-limit" in s["error"] and "\n" not in s["error"]
    assert jobs.worker._rss_mb(os.getpid()) - rss0 < 50  # the server did not pay for it
    ok = light.wait(light.submit("allocate", {"mb": 20}, "erin"), 30)
    assert ok["state"] == "done" and ok["result"]["allocated_mb"] == 20


def test_cancel_queued_and_running_jobs(light):
    running = light.submit("sleep", {"seconds": 2.5}, "frank")
    queued = light.submit("sleep", {"seconds": 0.3}, "grace")
    deadline = time.monotonic() + 20
    while light.status(running)["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert light.cancel(queued, "grace") and light.status(queued)["state"] == "cancelled"
    assert light.cancel(running, "frank")
    s = light.status(running)
    assert s["state"] == "cancelled" and s["error"] == "sleep job cancelled"
    assert light.wait(light.submit("sleep", {"seconds": 0.05}, "frank"), 30)["state"] == "done"


def test_identical_jobs_run_once_and_a_shared_job_survives_one_cancel(light):
    a = light.submit("sleep", {"seconds": 0.4}, "s1")
    b = light.submit("sleep", {"seconds": 0.4}, "s2")
    assert a == b
    assert light.cancel(a, "s1")  # s2 still wants it
    assert light.wait(b, 30)["state"] == "done"
    assert light.submit("sleep", {"seconds": 0.4}, "s3") == a  # a finished result is reused


def test_limits_per_session_and_unknown_kinds_are_one_line_refusals(light):
    ids = [light.submit("sleep", {"seconds": 0.3 + i / 100}, "hog") for i in range(3)]
    with pytest.raises(jobs.JobRefused, match="at most 3 per student"):
        light.submit("sleep", {"seconds": 0.9}, "hog")
    with pytest.raises(jobs.JobRefused, match="unknown"):
        light.submit("rm -rf", {}, "hog")
    for i in ids:
        light.wait(i, 30)
    assert light.status("nope-1")["state"] == "unknown" and "not known" in light.status("nope-1")["error"]


def test_a_crashing_worker_is_one_line_and_replaced(light):
    j = light.submit("sleep", {"seconds": 5}, "ivan")
    deadline = time.monotonic() + 20
    while light.status(j)["state"] != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    pid = next(w.proc.pid for w in light.workers if w.job is not None)
    os.kill(pid, 9)
    s = light.wait(j, 30)
    assert s["state"] == "error" and "ended unexpectedly" in s["error"] and "signal 9" in s["error"]
    assert light.wait(light.submit("sleep", {"seconds": 0.05}, "ivan"), 30)["state"] == "done"


def test_server_flags_and_environment(monkeypatch):
    monkeypatch.delenv("COMPRESSION_LAB_JOB_TIME_LIMIT", raising=False)
    lim = jobs.Limits.from_server_flags(["--job-time-limit", "42", "--job-memory-limit=512", "--job-workers", "3",
                                         "--other", "x"])
    assert (lim.time_s, lim.memory_mb, lim.workers) == (42.0, 512, 3)
    monkeypatch.setenv("COMPRESSION_LAB_JOB_TIME_LIMIT", "7")
    assert jobs.Limits.from_server_flags([]).time_s == 7.0
    assert 1 <= jobs.Limits.from_server_flags([]).workers <= max(1, (os.cpu_count() or 1) - 1)
    with pytest.raises(jobs.JobRefused, match="--job-memory-limit"):
        jobs.Limits.from_server_flags(["--job-memory-limit", "lots"])


@pytest.mark.slow
def test_recipe_job_trains_in_a_worker_and_matches_the_library():
    """A fine-tuning recipe run as a job gives the numbers apply_recipe gives in this process, and the model
    rebuilt from the job's bundle measures the same; sensitivity runs as a job too."""
    from compression_core import measure, resolve_workload
    from compression_core.recipe import apply_recipe

    r = jobs.JobRunner(jobs.Limits(time_s=240, memory_mb=1500, workers=1, warm=True))
    try:
        recipe = {"version": 1, "model": "digits-mlp", "seed": 0,
                  "steps": [{"kind": "prune_unstructured", "amount": 0.7}, {"kind": "finetune", "epochs": 1}]}
        j = r.submit("recipe", {"recipe": recipe}, "s")
        sens = r.submit("sensitivity", {"model": "digits-mlp", "technique": "prune"}, "s")
        s = r.wait(j, 240)
        assert s["state"] == "done", s.get("error")
        direct = apply_recipe(recipe, with_latency=False, measure_before=False)
        assert s["result"]["after"]["accuracy"] == direct.after.accuracy
        assert s["result"]["after"]["nonzero_params"] == direct.after.nonzero_params
        rebuilt = jobs.recipe_result(s["result"])
        assert measure(rebuilt.model, resolve_workload("digits-mlp"), with_latency=False).accuracy == \
            direct.after.accuracy
        assert [st.kind for st in rebuilt.steps] == ["prune_unstructured", "finetune"]
        ss = r.wait(sens, 240)
        assert ss["state"] == "done", ss.get("error")
        assert ss["result"]["technique"] == "prune" and ss["result"]["layers"]
        lat = r.wait(r.submit("latency", {"model": "digits-mlp", "recipe": recipe, "bundle": s["result"]["bundle"],
                                          "batch": 8, "rounds": 3}, "s"), 240)
        assert lat["state"] == "done", lat.get("error")
        (timed,) = lat["result"]["timings"]  # torch only, unless the payload names its runtimes
        assert timed["runtime"] == "torch" and not lat["result"]["errors"]
        assert timed["batch_size"] == 8 and timed["verdict"] and timed["before_ms"] > 0
        with pytest.raises(jobs.JobRefused) as bad:  # a model the server does not list: refused before it is queued
            r.submit("recipe", {"recipe": {**recipe, "model": "nope"}}, "s")
        assert "nope" in str(bad.value) and "digits-mlp" in str(bad.value) and "\n" not in str(bad.value)
    finally:
        r.shutdown()


def test_latency_job_times_each_runtime_and_a_runtime_that_cannot_run_is_one_line():
    """``run_latency`` (Explore's "Time before vs after", run here as a worker runs it): one comparison per runtime
    asked for, in order, each labelled with its runtime; a runtime that cannot time the model is one line in
    ``errors`` and the others are still timed."""
    recipe = {"version": 1, "model": "digits-mlp", "steps": [{"kind": "prune_unstructured", "amount": 0.5}]}
    seen = []
    out = jobs.run_latency({"model": "digits-mlp", "recipe": recipe, "batch": 4, "rounds": 3,
                            "runtimes": ["torch", "no such runtime"]}, lambda f, m: seen.append((f, m)))
    (timed,) = out["timings"]
    assert timed["runtime"] == "torch" and timed["batch_size"] == 4 and timed["rounds"] == 3
    assert timed["verdict"] in ("faster", "slower", "no measurable difference")
    (err,) = out["errors"]
    assert err["runtime"] == "no such runtime" and "unknown" in err["error"] and "\n" not in err["error"]
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and any("torch" in m for _, m in seen)


@pytest.mark.slow
def test_explore_trains_in_a_job_with_progress_then_shows_the_trained_numbers(tmp_path, monkeypatch):
    """The Explore page's "Run training steps" submits a job: the page shows the queue/progress panel with a Cancel
    button and keeps answering; polling (what the panel's 1 s fragment does in a browser) brings the trained numbers,
    equal to the library's own, and the trained configuration is kept in the history as applied."""
    from streamlit.testing.v1 import AppTest

    from compression_core.recipe import apply_recipe

    import store

    monkeypatch.setattr(store.database, "_STORE", store.Store(f"sqlite:///{tmp_path / 'h.db'}"))
    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=180)
    at.run()
    at.selectbox(key="x_model").set_value("digits-mlp").run()
    at.radio(key="x_prune_digits-mlp").set_value("unstructured (weights)").run()
    at.slider(key="x_prune_unstructured_amount").set_value(0.9).run()
    at.checkbox(key="x_on_finetune").check().run()
    at.number_input(key="x_finetune_epochs").set_value(2).run()
    assert not at.exception, at.exception
    at.button(key="b_run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.get("progress") and [b for b in at.button if b.key.startswith("b_cancel_")]  # queued or running, cancellable
    deadline = time.monotonic() + 240
    while not any("Trained" in s.value for s in at.success) and time.monotonic() < deadline:
        time.sleep(0.5)
        at.run()
        assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Trained" in s.value for s in at.success), "the training job did not finish in 240 s"
    recipe = at.session_state["current_recipe"]
    assert [s["kind"] for s in recipe["steps"]] == ["prune_unstructured", "finetune"]
    want = apply_recipe(recipe, with_latency=False, measure_before=False).after
    assert at.session_state["current_stats"]["accuracy"] == want.accuracy
    row = at.session_state["history"][-1]
    assert row["how"] == "applied" and row["recipe"] == recipe
    assert not at.get("progress")  # no bar left behind


def test_finished_results_are_bounded_in_memory():
    r = jobs.JobRunner(jobs.Limits(workers=1, warm=False, keep_finished=3, keep_result_mb=1))
    try:
        big = {"bundle": b"x" * (700 * 1024)}
        for i in range(3):  # results are recorded as if workers had sent them
            job = jobs.Job(id=f"j{i}", kind="sleep", payload={"i": i}, sessions={"s"}, dedupe=f"k{i}")
            r.jobs[job.id], r.by_key[f"k{i}"] = job, job.id
            r._finish(job, jobs.DONE, result=big)
            r._forget_old()
        assert list(r.jobs) == ["j2"]  # 3 x 700 KB > 1 MB: the oldest went first
        assert set(r.by_key) == {"k2"}  # a dropped job is no longer reused
    finally:
        r.shutdown()
