"""The workshop load benchmark with a student training while another moves the slider, on one real server: the
training runs as a job (the page keeps answering), the trained numbers equal the library's, nothing leaks between
sessions, the baselines stay unchanged. Only what machine load cannot change is asserted; timings are the
benchmark's business (``python -m benchmarks.workshop_load --sessions 40 --duration 120 --trainers 3``)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_a_trainer_and_a_slider_mover_on_one_server():
    from benchmarks import workshop_load

    r = workshop_load.run(sessions=2, duration=2.0, think=0.5, models=["digits-cnn"], trainers=1,
                           train_amounts=[0.6], train_epochs=1)
    assert r["errors"] == 0, r["error_samples"]
    assert r["leaks"] == 0, r["leak_samples"]  # includes the trainer's numbers after its job
    assert r["sessions_checked"] == 2, f"sessions that never checked: {r['unchecked']}"
    assert r["training_jobs"] >= 1 and r["interactions"] >= 1
    assert r["baselines_unchanged"], r["baseline_check"]
    assert r["server_tracebacks"] == 0, r["traceback_sample"]
    assert r["worker_cpu_s"] > 0  # the training ran in a worker process, not in the page server
