"""Loading once (issue 23 items 4 and 5): a baseline's measured numbers and a sensitivity sweep come back from the
disk cache identical, a damaged entry is ignored and rebuilt, and a student leaving cancels their job."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dashboard"))

import jobs  # noqa: E402
import sample_models  # noqa: E402
from compression_core import disk_cache, measure  # noqa: E402
from compression_core.sensitivity_cache import cached_sensitivity, lookup, sensitivity_key  # noqa: E402
from state import baselines  # noqa: E402
from state.results import _view  # noqa: E402

FACTS = {"classification": True, "num_classes": 10}


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(disk_cache.CACHE_ENV, str(tmp_path))
    return tmp_path


def _damage(folder: Path) -> None:
    files = sorted(folder.rglob("*.safetensors"))
    assert files
    for f in files:
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        f.write_bytes(bytes(raw))


def test_baseline_view_second_load_uses_the_cache_and_is_identical(cache_dir):
    wl = sample_models.load("digits-mlp")
    calls = []

    def build():
        calls.append(1)
        return _view(wl.model, wl, measure(wl.model, wl, name=wl.name, with_latency=False), FACTS)

    first = baselines.cached_view(wl, FACTS, build)
    second = baselines.cached_view(wl, FACTS, build)
    assert len(calls) == 1  # the second load measured nothing
    assert second["stats"] == first["stats"]
    assert (second["confusion"] == first["confusion"]).all() and second["confusion"].dtype == first["confusion"].dtype
    _damage(cache_dir / "baseline-view")
    third = baselines.cached_view(wl, FACTS, build)
    assert len(calls) == 2 and third["stats"] == first["stats"]  # ignored, measured again
    assert baselines.cached_view(wl, FACTS, build)["stats"] == first["stats"] and len(calls) == 2  # and stored again


def test_another_model_content_is_another_entry(cache_dir):
    import torch

    wl = sample_models.load("digits-mlp")
    k1 = baselines.content_key(wl, "view", FACTS)
    changed = sample_models.load("digits-mlp")
    with torch.no_grad():
        next(changed.model.parameters()).view(-1)[0] += 1.0
    assert baselines.content_key(changed, "view", FACTS) != k1
    assert baselines.content_key(wl, "view", {**FACTS, "num_classes": 9}) != k1


def test_sensitivity_is_cached_by_content_and_settings(cache_dir):
    wl = sample_models.load("digits-cnn")
    res, hit = cached_sensitivity(wl.model, wl, "prune", levels=(0.5, 0.9))
    assert not hit
    again, hit = cached_sensitivity(wl.model, wl, "prune", levels=(0.5, 0.9))
    assert hit and again.to_json_dict() == res.to_json_dict()
    assert lookup(wl.model, wl, "prune", levels=(0.5, 0.8)) is None  # other settings: not stored
    assert sensitivity_key(wl.model, wl, "prune", levels=(0.5, 0.9)) != sensitivity_key(
        wl.model, wl, "prune", levels=(0.5, 0.9), include_classifier=True)
    _damage(cache_dir / "sensitivity")
    assert lookup(wl.model, wl, "prune", levels=(0.5, 0.9)) is None
    rebuilt, hit = cached_sensitivity(wl.model, wl, "prune", levels=(0.5, 0.9))
    assert not hit and [c.points for c in rebuilt.layers] == [c.points for c in res.layers]


def test_a_student_leaving_cancels_their_job_and_not_a_shared_one():
    r = jobs.JobRunner(jobs.Limits(time_s=20.0, memory_mb=150, workers=1, warm=False, per_session=3))
    r.GONE_AFTER_S = 0.2
    connected = {"tab-a", "tab-b"}
    alive = connected.__contains__
    try:
        mine = r.submit("sleep", {"seconds": 8.0}, "alice")
        r.attach(mine, "alice", "tab-a", alive)
        shared = r.submit("sleep", {"seconds": 0.9}, "bob")
        assert r.submit("sleep", {"seconds": 0.9}, "carol") == shared
        r.attach(shared, "bob", "tab-b", alive)
        r.attach(shared, "carol", "tab-a", alive)
        deadline = time.monotonic() + 20
        while r.status(mine)["state"] != "running" and time.monotonic() < deadline:
            time.sleep(0.02)
        connected.discard("tab-a")  # alice (and carol) closed their tab
        while r.status(mine)["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        s = r.status(mine)
        assert s["state"] == "cancelled" and s["error"] == "sleep job cancelled"
        assert r.wait(shared, 30)["state"] == "done"  # bob is still there
    finally:
        r.shutdown()


@pytest.mark.slow
def test_minilm_tokenized_splits_come_back_identical_from_disk(cache_dir):
    import torch

    from sample_models import minilm_topics as m

    m.splits.cache_clear()
    try:
        built = m.splits()
        assert m._SPLITS.load(m.splits_key()) is not None
        m.splits.cache_clear()
        again = m.splits()
        for name in ("train", "calib", "test"):
            assert torch.equal(again[name].y, built[name].y)
            assert all(torch.equal(again[name].x[k], built[name].x[k]) for k in ("input_ids", "attention_mask"))
        _damage(cache_dir / "minilm-topics-splits")
        m.splits.cache_clear()
        assert torch.equal(m.splits()["test"].x["input_ids"], built["test"].x["input_ids"])  # rebuilt
    finally:
        m.splits.cache_clear()
