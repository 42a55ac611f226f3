"""Peak inference RAM (``ModelStats.peak_ram_bytes`` / ``peak_ram_bytes_b1``) against measurements that share no
code with ``compression_core.peak_ram``: torch.profiler's memory profile (profile_memory=True) for torch, and a
subprocess's peak resident set (VmHWM in /proc/self/status) for ONNX Runtime; within 20 % or 2 MB on every sample
model at batch 1 and batch 8 (minilm-topics in the slow run)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from compression_core import inputs as I
from compression_core.cli import main
from compression_core.measure import measure
from compression_core.ort import deploy_proto, measure_ort
from compression_core.peak_ram import torch_peak_ram
from compression_core.recipe import apply_recipe
from compression_core.search import SearchPoint, _point, _violations
from compression_core.workload import resolve_workload, workload_names

MB = 2**20
BATCH = 8
SLOW_MODELS = ("minilm-topics", "tiny-lm")  # transformers models: 10-15 s a case
MODELS = [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MODELS else n for n in workload_names()]


def close(ours: int | None, reference: int) -> bool:
    """Within 20 % of the independent figure, or 2 MB."""
    return ours is not None and abs(ours - reference) <= max(0.2 * reference, 2 * MB)


def batch(wl, n: int, dtype=torch.float32):
    """The first ``n`` test items as their own tensors (no view into the whole split), floats in ``dtype``."""
    x = I.head(wl.test.x, n)
    if I.is_dict(x):
        return {k: v.clone() for k, v in x.items()}
    return x.to(dtype).clone() if x.is_floating_point() else x.clone()


# ------------------------------------------------------------------------------------------------- torch
def profiler_peak(model: torch.nn.Module, x) -> int:
    """Independent: torch.profiler's memory profile of one forward pass: the tensors that existed before it (the
    weights it used, the input) plus the peak of what was allocated and not yet freed during it."""
    model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            model(**x) if isinstance(x, dict) else model(x)
    before: dict = {}
    live = peak = 0
    for _, action, key, size in prof._memory_profile().timeline:
        if action.name == "PREEXISTING":
            before[key] = size
        elif action.name == "CREATE":
            live += size
            peak = max(peak, live)
        elif action.name == "DESTROY":
            live -= size
    return sum(before.values()) + peak


@pytest.mark.first_case_fast
@pytest.mark.parametrize("name", MODELS)
def test_torch_peak_ram_matches_the_torch_profiler(name):
    wl = resolve_workload(name)
    stats = measure(wl.model, wl, name=name, batch_size=BATCH, with_latency=False)
    assert stats.peak_ram_bytes_b1 is not None and stats.peak_ram_bytes >= stats.peak_ram_bytes_b1
    for n, ours in ((1, stats.peak_ram_bytes_b1), (BATCH, stats.peak_ram_bytes)):
        reference = profiler_peak(wl.model, batch(wl, n))
        assert close(ours, reference), (name, n, ours, reference)


def test_weights_count_what_is_held_not_what_masks_or_packing_add():
    wl = resolve_workload("mnist-lenet300")
    x = I.head(wl.test.x, 1)
    base = torch_peak_ram(wl.model, x)
    assert base["weights"] == sum(p.numel() * 4 for p in wl.model.parameters())  # fp32, no buffers
    pruned = apply_recipe({"version": 1, "model": "mnist-lenet300", "steps": [
        {"kind": "prune_unstructured", "amount": 0.5}]}, measure_before=False, with_latency=False).model
    assert torch_peak_ram(pruned, x)["weights"] == base["weights"]  # masks folded as shipped: no weight_orig + mask
    dynamic = apply_recipe({"version": 1, "model": "mnist-lenet300", "steps": [{"kind": "quantize_dynamic"}]},
                           measure_before=False, with_latency=False).model
    assert 0.2 < torch_peak_ram(dynamic, x)["weights"] / base["weights"] < 0.3  # int8 weights, fp32 biases
    assert torch_peak_ram(wl.model, I.head(wl.test.x, 32))["activations"] > base["activations"]


def test_something_that_cannot_be_followed_gets_no_figure_not_an_error():
    from compression_core.measure import peak_ram_pair

    assert peak_ram_pair(object(), torch.zeros(2, 3), 1) == (None, None)


# -------------------------------------------------------------------------------------------- ONNX Runtime
_CHILD = textwrap.dedent("""
    import ctypes, sys
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024

    def options():
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        return so

    def feed(sess, arrays):
        names = [i.name for i in sess.get_inputs()]
        return {n: arrays[n] for n in names} if all(n in arrays for n in names) else {names[0]: arrays["x"]}

    folder, sizes = sys.argv[1], sys.argv[2:]
    libc = ctypes.CDLL("libc.so.6")
    g = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "warm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    warm = ort.InferenceSession(helper.make_model(g).SerializeToString(), options(), providers=["CPUExecutionProvider"])
    warm.run(None, {"a": np.zeros(1, np.float32)})
    out = []
    for n in sizes:
        arrays = dict(np.load(f"{folder}/x{n}.npz"))
        # once first: what ORT initialises once per process for these kernels is not this model's memory
        first = ort.InferenceSession(folder + "/m.onnx", options(), providers=["CPUExecutionProvider"])
        first.run(None, feed(first, arrays))
        del first
        libc.malloc_trim(0)  # freed memory back to the system: RSS counts what is held
        before = status("VmRSS:")
        sess = ort.InferenceSession(folder + "/m.onnx", options(), providers=["CPUExecutionProvider"])
        libc.malloc_trim(0)  # the file as parsed while loading is freed: held weights stay
        with open("/proc/self/clear_refs", "w") as f:  # the peak from here on: the session and one inference
            f.write("5")
        sess.run(None, feed(sess, arrays))
        out.append(status("VmHWM:") - before)
        del sess
    print(" ".join(str(v) for v in out))
""")


def vmhwm_peaks(blob: bytes, batches: dict[int, dict[str, np.ndarray]], folder) -> dict[int, int]:
    """Independent: a fresh Python process loads the .onnx file in ONNX Runtime (as the library configures it: 1
    thread, all optimisations) and runs one batch; its resident-set growth over that, VmHWM minus VmRSS before the
    session, after ORT's one-off start-up was paid on a throw-away session of the same model."""
    (folder / "m.onnx").write_bytes(blob)
    for n, arrays in batches.items():
        np.savez(folder / f"x{n}.npz", **arrays)
    r = subprocess.run([sys.executable, "-c", _CHILD, str(folder), *map(str, batches)], capture_output=True,
                       text=True, timeout=600)
    if r.returncode != 0 and "clear_refs" in r.stderr:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert r.returncode == 0, r.stderr[-2000:]
    return dict(zip(batches, map(int, r.stdout.split())))


@pytest.mark.first_case_fast
@pytest.mark.parametrize("name", MODELS)
def test_onnx_runtime_peak_ram_matches_a_subprocess_peak_rss(name, tmp_path):
    wl = resolve_workload(name)
    blob = deploy_proto(wl.model, I.head(wl.test.x, 2)).SerializeToString()
    stats = measure_ort(blob, wl, name=name, batch_size=BATCH, with_latency=False)
    assert stats.runtime == "onnxruntime" and stats.peak_ram_bytes >= stats.peak_ram_bytes_b1
    arrays = {n: ({k: v.numpy() for k, v in batch(wl, n).items()} if I.is_dict(wl.test.x)
                  else {"x": batch(wl, n).numpy()}) for n in (1, BATCH)}
    reference = vmhwm_peaks(blob, arrays, tmp_path)
    for n, ours in ((1, stats.peak_ram_bytes_b1), (BATCH, stats.peak_ram_bytes)):
        assert close(ours, reference[n]), (name, n, ours, reference[n])


def test_ort_figure_holds_a_buffer_that_onnx_runtime_plans_to_reuse():
    """ORT gives a value the buffer of an earlier dead value of the same shape and type, so that buffer stays held
    across the gap: A (1 MB) dies at the second node, C (A's shape) reuses its buffer three nodes later, and A's
    megabyte is held beside D and E (3 MB); with C of another shape A is freed at once (2 MB: D and E)."""
    from types import SimpleNamespace as N

    from compression_core.peak_ram import _planned_peak

    def chain(c_shape):
        nodes = [N(op_type="Relu", input=[a], output=[b]) for a, b in zip("XABDE", "ABDEC")]
        size = {"A": (MB, (4, 512, 512)), "B": (4096, (4, 1024)), "D": (MB, (4, 1, 512, 512)),
                "E": (MB, (4, 2, 256, 512)), "C": (MB, c_shape)}
        return _planned_peak(nodes, size, {"C"})

    assert chain((4, 512, 512)) == 3 * MB + 4096  # A's buffer held from the first node to the last
    assert chain((4, 262144)) == 2 * MB  # nothing planned to reuse: D and E are the peak (the arena reuses B's page)


# ------------------------------------------------------------------------------------------ reports, search
def test_measure_reports_peak_ram_in_json_and_text(capsys):
    assert main(["measure", "--model", "digits-mlp", "--batch-size", "8", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert 0 < stats["peak_ram_bytes_b1"] < stats["peak_ram_bytes"]
    assert main(["measure", "--model", "digits-mlp", "--batch-size", "8"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("peak RAM"))
    assert "at batch 1" in line and "at batch 8" in line


def test_search_bounds_peak_ram():
    base = {"accuracy": 0.9, "size_bytes": 1000}
    r = {"accuracy": 0.9, "size_bytes": 500, "size_kind": "dense", "latency_ms": None, "peak_ram_bytes": 4000}
    fits = _point(0, "search", {}, {}, r, base, None, None, max_ram_bytes=4000)
    over = _point(0, "search", {}, {}, r, base, None, None, max_ram_bytes=3999)
    assert fits.feasible and not over.feasible and fits.peak_ram_bytes == 4000
    unknown = SearchPoint(trial=1, origin="search", settings={}, recipe={}, accuracy=0.9, size_bytes=1)
    assert _violations(unknown, base, None, None, 10)["max_ram_bytes"] > 0  # not measured: not within a bound
    assert fits.front_entry()["peak_ram_bytes"] == 4000


def test_ram_as_an_objective_keeps_the_leaner_of_two_equal_points():
    from compression_core.search import pareto_front

    def pt(trial, ram):
        return SearchPoint(trial=trial, origin="search", settings={}, recipe={}, accuracy=0.9, size_bytes=100,
                           peak_ram_bytes=ram, feasible=True)

    a, b = pt(0, 5000), pt(1, 4000)
    assert pareto_front([a, b], ("accuracy", "size")) == [a]  # equal without RAM: the earliest
    assert pareto_front([a, b], ("accuracy", "size", "ram")) == [b]


def test_search_command_refuses_a_bad_ram_bound_in_one_line(capsys):
    assert main(["search", "--model", "digits-mlp", "--trials", "2", "--max-ram-bytes", "lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --max-ram-bytes:") and "\n" not in err
