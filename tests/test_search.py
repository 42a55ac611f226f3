"""Recipe search (compression_core.search), its executors (local, a real local Ray runtime on 127.0.0.1) and the
search CLI: determinism, a non-dominated front, recipes that re-apply to the reported numbers, one-line errors."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import torch

from compression_core import CompressionError
from compression_core.search import (
    SearchPoint,
    build_space,
    evaluate_recipe,
    make_recipe,
    pareto_front,
    search,
    shipped_size,
)
from compression_core.search_cli import main as search_main
from compression_core.workload import resolve_workload

MODEL = "digits-mlp"  # 64-128-64-10: a trial is a few milliseconds
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _front_key(result):
    return [(p.trial, p.accuracy, p.size_bytes, json.dumps(p.recipe, sort_keys=True)) for p in result.front]


def _dominates(a: SearchPoint, b: SearchPoint) -> bool:
    return (a.accuracy >= b.accuracy and a.size_bytes <= b.size_bytes
            and (a.accuracy > b.accuracy or a.size_bytes < b.size_bytes))


@pytest.fixture(scope="module")
def small_search():
    return search(MODEL, trials=14, batch_size=4, seed=3)


# ------------------------------------------------------------------------------------------------- front
def test_pareto_front_keeps_only_non_dominated_points_smallest_first():
    def pt(i, acc, size, feasible=True):
        return SearchPoint(trial=i, origin="search", settings={}, recipe={}, accuracy=acc, size_bytes=size,
                           feasible=feasible)

    pts = [pt(0, 0.9, 100), pt(1, 0.95, 200), pt(2, 0.9, 150), pt(3, 0.97, 90, feasible=False), pt(4, 0.9, 100),
           pt(5, 0.99, 400), pt(6, 0.95, 300)]
    front = pareto_front(pts)
    assert [p.trial for p in front] == [0, 1, 5]  # 2 and 6 dominated, 3 infeasible, 4 equal to 0 (later)


@pytest.mark.slow
def test_front_is_non_dominated_and_every_seed_is_matched_or_beaten(small_search):
    r = small_search
    assert r.trials == 14 and r.failed == 0 and r.front
    done = [p for p in r.points if p.error is None]
    for f in r.front:
        assert not any(_dominates(q, f) for q in done)
    assert [p.size_bytes for p in r.front] == sorted(p.size_bytes for p in r.front)
    seeds = [p for p in r.points if p.origin in ("uniform", "method", "fit_budget")]
    assert {p.origin for p in seeds} >= {"uniform", "method", "fit_budget"}
    for s in seeds:  # the front can only improve on the seeded settings
        assert any(f.accuracy >= s.accuracy and f.size_bytes <= s.size_bytes for f in r.front)


def test_search_is_deterministic_for_a_seed(small_search):
    again = search(MODEL, trials=14, batch_size=4, seed=3)
    assert _front_key(again) == _front_key(small_search)
    assert [p.settings for p in again.points] == [p.settings for p in small_search.points]


def test_front_numbers_are_what_apply_recipe_reports(small_search):
    from compression_core.recipe import apply_recipe

    for p in small_search.front:
        res = apply_recipe(p.recipe, with_latency=False)
        assert res.after.accuracy == p.accuracy
        assert shipped_size(res.after) == (p.size_bytes, p.size_kind)


def test_trial_sizes_count_the_shipped_file():
    wl = resolve_workload(MODEL)
    space = build_space(wl)
    assert space.layers == ("fc1", "fc2") and "int8" in space.methods and "int4" in space.methods
    dense = evaluate_recipe(MODEL, {"recipe": make_recipe(MODEL, [])})
    sparse = evaluate_recipe(MODEL, {"recipe": make_recipe(MODEL, space.steps(space.params_for(0.8)))})
    assert sparse["size_kind"] == "sparse" and sparse["size_bytes"] == sparse["sparse_size_bytes"]
    assert sparse["size_bytes"] < 0.5 * dense["size_bytes"] and dense["size_kind"] == "dense"
    bad = evaluate_recipe(MODEL, {"recipe": make_recipe(MODEL, [{"kind": "prune_unstructured",
                                                                 "targets": ["nope"]}])})
    assert "error" in bad and "nope" in bad["error"]


def test_constraints_keep_infeasible_points_off_the_front():
    base = evaluate_recipe(MODEL, {"recipe": make_recipe(MODEL, [])})
    bound = int(base["size_bytes"] * 0.3)
    r = search(MODEL, trials=10, batch_size=5, seed=1, max_size_bytes=bound, max_drop=2.0)
    assert r.front
    for p in r.front:
        assert p.size_bytes <= bound and (r.baseline["accuracy"] - p.accuracy) * 100 <= 2.0 + 1e-9
    assert any(not p.feasible for p in r.points)


def test_grouped_space_for_many_layers():
    wl = resolve_workload(MODEL)
    space = build_space(wl, max_groups=1, methods=["none"])
    assert space.groups == (("fc1", "fc2"),) and space.methods == ("none",)
    d = space.describe(space.params_for({"fc1": 0.5, "fc2": 0.7}))
    assert d["sparsity"] == {"fc1": 0.6, "fc2": 0.6}


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_json_and_out_recipes_reapply_to_the_reported_numbers(tmp_path, capsys):
    from compression_core.recipe import apply_recipe

    out = tmp_path / "front"
    assert search_main(["search", "--model", MODEL, "--trials", "10", "--json", "--out", str(out), "--seed", "2"]) == 0
    cap = capsys.readouterr()
    d = json.loads(cap.out)
    assert set(d) == {"model", "metric", "higher_is_better", "baseline", "trials", "seconds", "executor", "front"}
    assert set(d["baseline"]) == {"accuracy", "size_bytes"} and d["executor"] == "local" and d["trials"] == 10
    assert "trial 10/10" in cap.err  # progress on stderr
    files = sorted(out.glob("front-*.yaml"))
    assert len(files) == len(d["front"]) > 0
    summary = json.loads((out / "summary.json").read_text())
    assert [f["file"] for f in summary["front"]] == [f.name for f in files]
    assert not list(out.glob(".*.tmp"))
    for f, point in zip(files, d["front"]):
        res = apply_recipe(str(f), with_latency=False)
        assert res.after.accuracy == point["accuracy"]
        assert shipped_size(res.after)[0] == point["size_bytes"]
        assert point["latency_ms"] is None


@pytest.mark.parametrize("argv, needle", [
    (["--max-drop", "-1"], "--max-drop"),
    (["--max-drop", "nan"], "--max-drop"),
    (["--max-size-bytes", "0"], "--max-size-bytes"),
    (["--max-size-bytes", "12kb"], "--max-size-bytes"),
    (["--max-size-bytes", "10"], "smallest file"),
    (["--trials", "0"], "--trials"),
    (["--objectives", "accuracy,speed"], "--objectives"),
    (["--objectives", "size"], "--objectives"),
    (["--ray-address", "127.0.0.1:6379"], "only with --executor ray"),
    (["--executor", "ray", "--ray-address", "nonsense"], "--ray-address"),
])
def test_cli_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, capsys, argv, needle):
    out = tmp_path / "out"
    args = ["search", "--model", MODEL, "--trials", "4", "--out", str(out)]
    if "--trials" in argv:
        args = ["search", "--model", MODEL, "--out", str(out)]
    assert search_main(args + argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not out.exists()


def test_cli_unknown_model_is_one_line(tmp_path, capsys):
    assert search_main(["search", "--model", "no-such-model", "--trials", "3", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no-such-model" in err[0]
    assert not (tmp_path / "o").exists()


def test_unreachable_ray_address_is_one_line(tmp_path, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    code = search_main(["search", "--model", MODEL, "--trials", "3", "--executor", "ray", "--ray-address",
                        f"127.0.0.1:{port}", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot reach a Ray cluster" in err[0], err
    assert not (tmp_path / "o").exists()


def test_an_address_that_is_not_a_ray_cluster_is_one_line(tmp_path, capsys):
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def answer():  # an HTTP/1 server: Ray's client would retry against it for minutes
        conn, _ = srv.accept()
        conn.recv(100)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        conn.close()

    threading.Thread(target=answer, daemon=True).start()
    code = search_main(["search", "--model", MODEL, "--trials", "3", "--executor", "ray", "--ray-address",
                        f"127.0.0.1:{port}", "--out", str(tmp_path / "o")])
    srv.close()
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a Ray cluster" in err[0], err
    assert not (tmp_path / "o").exists()


def test_missing_ray_package_tells_how_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    code = search_main(["search", "--model", MODEL, "--trials", "3", "--executor", "ray", "--out",
                        str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'pip install "compression-lab[ray]"' in err[0], err
    assert not (tmp_path / "o").exists()


def test_missing_ray_package_for_a_sweep(monkeypatch):
    from compression_core.executors import sensitivity_sweep

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(CompressionError, match=r"compression-lab\[ray\]"):
        sensitivity_sweep(MODEL, executor="ray")


def test_unknown_executor():
    from compression_core.executors import make_executor

    with pytest.raises(CompressionError, match="local or ray"):
        make_executor("dask")


# ---------------------------------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_runtime():
    """ONE real local Ray runtime (2 CPUs, 127.0.0.1) for the Ray tests; the executors reuse it."""
    pytest.importorskip("ray")
    from compression_core.executors import RayExecutor

    ex = RayExecutor(workers=2)
    yield ex
    ex.close()


@pytest.mark.slow  # a real Ray runtime: ~10 s quiet, over 30 s on a loaded 2-core machine; CI runs it
def test_ray_runtime_is_local_on_loopback(ray_runtime):
    assert ray_runtime.address.startswith("127.0.0.1:")
    assert ray_runtime.workers == 2


@pytest.mark.slow  # a real Ray runtime: ~10 s quiet, over 30 s on a loaded 2-core machine; CI runs it
def test_ray_search_gives_the_same_front_as_local(ray_runtime, small_search):
    r = search(MODEL, trials=14, batch_size=4, seed=3, executor="ray")
    assert r.executor == "ray"
    assert _front_key(r) == _front_key(small_search)
    assert [(p.accuracy, p.size_bytes) for p in r.points] == [(p.accuracy, p.size_bytes) for p in small_search.points]


@pytest.mark.slow  # a real Ray runtime: ~10 s quiet, over 30 s on a loaded 2-core machine; CI runs it
def test_ray_sensitivity_sweep_equals_the_local_sweep(ray_runtime):
    from compression_core.executors import sensitivity_sweep

    local = sensitivity_sweep(MODEL, "prune")
    remote = sensitivity_sweep(MODEL, "prune", executor="ray")
    assert remote.layers == local.layers and remote.baseline_accuracy == local.baseline_accuracy
    assert remote.model == local.model and remote.samples == local.samples
    q_local = sensitivity_sweep(MODEL, "quantize", include_classifier=True)
    q_remote = sensitivity_sweep(MODEL, "quantize", executor="ray", include_classifier=True)
    assert q_remote.layers == q_local.layers


@pytest.mark.slow  # a real Ray runtime: ~10 s quiet, over 30 s on a loaded 2-core machine; CI runs it
def test_ray_workers_rebuild_a_file_workload_from_its_reference(ray_runtime, tmp_path):
    """A workload in a user's file (not importable as a package) runs on the workers from its reference."""
    src = tmp_path / "my_workload.py"
    src.write_text(
        "import torch\n"
        "from torch import nn\n"
        "from compression_core import Workload\n"
        "def workload():\n"
        "    torch.manual_seed(0)\n"
        "    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 3))\n"
        "    x = torch.randn(64, 8)\n"
        "    return Workload(name='tiny', model=model, test=x, metric='agreement')\n")
    ref = f"{src}:workload"
    local = search(ref, trials=6, batch_size=3, seed=0, seed_trials=False)
    remote = search(ref, trials=6, batch_size=3, seed=0, seed_trials=False, executor="ray")
    assert _front_key(remote) == _front_key(local)
    assert remote.front[0].recipe["model"] == str(src.resolve()) + ":workload"


class _Bag(torch.nn.Module):
    """Token ids -> mean of embeddings -> MLP (an embedding table to store as int8)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(200, 16)
        self.fc1 = torch.nn.Linear(16, 32)
        self.fc2 = torch.nn.Linear(32, 4)

    def forward(self, ids):
        return self.fc2(torch.relu(self.fc1(self.emb(ids).mean(1))))


def bag_workload():
    from compression_core import Workload

    torch.manual_seed(0)
    return Workload(name="bag", model=_Bag(), test=torch.randint(0, 200, (64, 6)), metric="agreement")


def test_embedding_tables_are_a_search_choice():
    from compression_core.recipe import step_kinds

    ref = "tests.test_search:bag_workload"
    if "quantize_embedding" not in step_kinds():
        assert not build_space(resolve_workload(ref)).embeddings  # no such technique: not offered
        pytest.skip("quantize_embedding is not registered in this checkout")
    space = build_space(resolve_workload(ref))
    assert space.embeddings and space.layers == ("fc1",)
    steps = space.steps(space.params_for(0.0, "none", embedding="int8"))
    assert steps == [{"kind": "quantize_embedding"}]
    r = search(ref, trials=12, batch_size=4, seed=0)
    assert sum(p.settings["embedding"] == "int8" for p in r.points) >= 4  # a seed per method with int8 tables
    dense = r.baseline["size_bytes"]
    assert min(p.size_bytes for p in r.front) < dense / 2


# ------------------------------------------------------------------------------------------------ dashboard
@pytest.mark.slow
def test_dashboard_search_page_fills_in_and_loads_a_point_into_explore():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/search.py").run()
    assert not at.exception, at.exception
    at.selectbox(key="q_model").set_value(MODEL).run()
    at.number_input(key="q_trials").set_value(15).run()
    at.button(key="q_start").click().run()
    assert not at.exception, at.exception
    run = at.session_state["srch_run"]
    deadline = time.monotonic() + 120
    while not run["done"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run["done"] and run["error"] is None and len(run["points"]) == 15
    at.run()
    assert not at.exception, at.exception
    specs = [c.proto.spec for c in at.get("plotly_chart")]
    assert any("front (best trade-offs)" in s and "uniform settings" in s for s in specs)
    front = sorted(run["front"], key=lambda p: p["size_bytes"])
    assert at.selectbox(key="q_pick").options and len(at.selectbox(key="q_pick").options) == len(front)
    # load a point (one with pruning if the front has one) into Explore: its recipe then has the same techniques
    # and per-layer sparsity
    k = next((i for i, p in enumerate(front) if any(s["kind"] == "prune_unstructured" for s in p["recipe"]["steps"])),
             0)
    at.selectbox(key="q_pick").set_value(k).run()
    ring = [json.loads(c.proto.spec)["data"][-1] for c in at.get("plotly_chart") if "chosen below" in c.proto.spec]
    assert ring and ring[0]["name"] == "chosen below" and ring[0]["x"] == [front[k]["size_bytes"] / 1024]  # ringed
    at.button(key="q_load").click().run()
    assert not at.exception and any("Explore" in s.value for s in at.success)
    steps = front[k]["recipe"]["steps"]
    at.switch_page("pages/explore.py").run()
    assert not at.exception, at.exception
    got = at.session_state["current_recipe"]["steps"]
    assert [s["kind"] for s in got] == [s["kind"] for s in steps]
    for mine, theirs in zip(steps, got):
        if mine["kind"] == "prune_unstructured":  # the same sparsity per layer: uniform values on the main slider
            from compression_core.prune import UnstructuredPruneConfig

            amount = theirs.get("amount", UnstructuredPruneConfig().amount)
            have = {n: (theirs.get("overrides") or {}).get(n, amount) for n in mine["overrides"]}
            assert {n: v for n, v in have.items() if v} == {n: v for n, v in mine["overrides"].items() if v}


@pytest.mark.slow
def test_latency_objective_and_nsga2_sampler():
    r = search(MODEL, trials=4, batch_size=2, seed=0, seed_trials=False, objectives=["accuracy", "size", "latency"])
    assert r.objectives == ["accuracy", "size", "latency"] and r.front
    assert all(p.latency_ms is not None and p.latency_ms > 0 for p in r.points)
    a = search(MODEL, trials=6, batch_size=3, seed=5, sampler="nsga2", seed_trials=False)
    b = search(MODEL, trials=6, batch_size=3, seed=5, sampler="nsga2", seed_trials=False)
    assert _front_key(a) == _front_key(b)
