"""ONNX export and ONNX Runtime: exported models predict what the torch model predicts (fp32 logits within 1e-4,
ORT int8 argmax agreement >= 99% on the test split), files are written atomically with honest sizes, and what
cannot be exported says so in one line."""

from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.nn.utils import prune as tprune

import sample_models
from compression_core import CompressionError, measure, predict, size_bytes
from compression_core.onnx_export import (
    check_exportable,
    export_onnx,
    external_data_files,
    onnx_bytes,
    onnx_size_bytes,
    save_onnx,
    to_onnx,
)
from compression_core.cpu import cpu_has_int8_dot
from compression_core.ort import (
    fastest_int8,
    measure_ort,
    onnx_layer_stats,
    ort_accuracy,
    ort_latency,
    ort_predict,
    ort_quantize,
    resolve_reduce_range,
    runtime_comparison,
    session,
)

ROOT = Path(__file__).resolve().parents[1]


def runtime_lesson():
    """The Learn page's explanation (dashboard/runtime_lesson.py: lesson prose lives in the dashboard)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("runtime_lesson", ROOT / "dashboard" / "runtime_lesson.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=None)
def fp32_export(name: str) -> bytes:
    wl = sample_models.load(name)
    return onnx_bytes(wl.model, wl.test.x[:2])


@lru_cache(maxsize=None)
def fp16_export(name: str) -> bytes:
    wl = sample_models.load(name)
    return onnx_bytes(wl.model.half(), wl.test.x[:2])


@lru_cache(maxsize=None)
def reference(name: str) -> torch.Tensor:
    wl = sample_models.load(name)
    return predict(wl.model, wl.test.x)


@pytest.mark.first_case_fast
@pytest.mark.parametrize("name", sample_models.MODEL_NAMES)
def test_fp32_export_matches_torch_logits(name):
    wl = sample_models.load(name)
    sess = session(fp32_export(name))
    out = ort_predict(sess, wl.test.x)
    assert out.shape == reference(name).shape
    assert (out - reference(name)).abs().max().item() <= 1e-4
    # the batch dimension is dynamic: batch 1 and an odd batch run too
    for n in (1, 7):
        assert torch.allclose(ort_predict(sess, wl.test.x[:n]), reference(name)[:n], atol=1e-4)


@pytest.mark.parametrize("name", sample_models.MODEL_NAMES)
def test_ort_int8_agrees_with_torch(name):
    """Both ORT int8 methods keep >= 99% argmax agreement with the fp32 model and make the file smaller."""
    wl = sample_models.load(name)
    fp32 = fp32_export(name)
    ref = reference(name).argmax(1)
    for method in ("dynamic", "static"):
        q = ort_quantize(fp32, method, calib_x=wl.calib.x)
        agree = (ort_predict(session(q), wl.test.x).argmax(1) == ref).float().mean().item()
        assert agree >= 0.99, (method, agree)
        if not (name == "digits-lstm" and method == "static"):  # ORT's static int8 leaves LSTMs float
            assert len(q) < 0.8 * len(fp32), (method, len(q), len(fp32))


def test_ort_int8_stores_int8_weights_and_static_uses_qdq():
    fp32 = fp32_export("mnist-lenet300")
    calib = sample_models.data("mnist-lenet300").calib.x
    dyn = onnx.ModelProto.FromString(ort_quantize(fp32, "dynamic"))
    static = onnx.ModelProto.FromString(ort_quantize(fp32, "static", calib_x=calib))
    assert {n.op_type for n in dyn.graph.node} >= {"DynamicQuantizeLinear", "MatMulInteger"}
    assert {n.op_type for n in static.graph.node} >= {"QuantizeLinear", "DequantizeLinear"}
    for proto in (dyn, static):
        big = [r for r in onnx_layer_stats(proto) if r.params >= 1000]  # the three weight matrices
        assert len(big) == 3 and all(r.bits == 8 and r.dtype in ("int8", "uint8") for r in big)
    # the exported fp32 weights are the torch weights, exactly
    wl = sample_models.load("mnist-lenet300")
    stats = {r.name: r for r in onnx_layer_stats(fp32)}
    assert stats["fc1.weight"].params == wl.model.fc1.weight.numel()
    w = next(i for i in onnx.ModelProto.FromString(fp32).graph.initializer if i.name == "fc1.weight")
    assert np.array_equal(onnx.numpy_helper.to_array(w), wl.model.fc1.weight.detach().numpy())


def test_static_calibration_uses_the_data():
    fp32 = fp32_export("digits-mlp")
    calib = sample_models.data("digits-mlp").calib.x
    with pytest.raises(CompressionError, match="calibration data"):
        ort_quantize(fp32, "static")
    a = ort_quantize(fp32, "static", calib_x=calib)
    b = ort_quantize(fp32, "static", calib_x=calib * 3.0)  # wider ranges -> other activation scales
    assert a != b
    assert a == ort_quantize(fp32, "static", calib_x=calib)  # deterministic
    # the histogram calibrators need equal batches; a ragged split (180 = 2 x 64 + 52) still works
    ent = ort_quantize(fp32, "static", calib_x=calib, calibrate_method="entropy")
    assert len(session(ent).get_inputs()) == 1


@pytest.mark.slow
def test_quantize_refuses_quantized_or_half_models():
    fp32 = fp32_export("digits-mlp")
    q = ort_quantize(fp32, "dynamic")
    with pytest.raises(CompressionError, match="already quantized"):
        ort_quantize(q, "dynamic")
    with pytest.raises(CompressionError, match="fp32"):
        ort_quantize(fp16_export("digits-mlp"), "dynamic")
    with pytest.raises(CompressionError, match="method"):
        ort_quantize(fp32, "weekly")


def test_reduce_range_auto_follows_the_cpu(monkeypatch):
    import compression_core.cpu as cpumod

    assert resolve_reduce_range(True) is True and resolve_reduce_range(False) is False
    assert resolve_reduce_range("auto") is (not cpu_has_int8_dot())
    monkeypatch.setattr(cpumod, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    monkeypatch.setattr(cpumod.platform, "system", lambda: "Linux")
    assert resolve_reduce_range("auto") is True  # AVX2 without VNNI: 7-bit weights
    monkeypatch.setattr(cpumod, "cpu_flags", lambda: frozenset({"avx2", "avx512_vnni"}))
    assert resolve_reduce_range("auto") is False


@pytest.mark.slow
def test_pruned_model_exports_with_masks_folded_and_is_not_modified():
    wl = sample_models.load("digits-mlp")
    tprune.l1_unstructured(wl.model.fc1, "weight", amount=0.7)
    wl.model.train()
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    proto = to_onnx(wl.model, wl.test.x[:1])  # a batch of 1 still gives a dynamic batch
    assert wl.model.training
    after = wl.model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    wl.model.eval()
    names = {i.name for i in proto.graph.initializer}
    assert not any(n.endswith(("_mask", "_orig")) for n in names)
    w = next(i for i in proto.graph.initializer if i.name == "fc1.weight")
    arr = onnx.numpy_helper.to_array(w)
    assert np.array_equal(arr, wl.model.fc1.weight.detach().numpy())
    assert (arr == 0).mean() == pytest.approx(0.7, abs=0.01)
    out = ort_predict(session(proto), wl.test.x[:5])
    assert (out - predict(wl.model, wl.test.x[:5])).abs().max().item() <= 1e-4
    assert hasattr(wl.model.fc1, "weight_mask")  # the caller's model keeps its pruning


@pytest.mark.slow
def test_structurally_pruned_and_shrunk_model_exports():
    from compression_core.prune import ShrinkConfig, StructuredPruneConfig, prune

    wl = sample_models.load("digits-cnn")
    small = prune(prune(wl.model, StructuredPruneConfig(amount=0.5, unit="channels"), wl), ShrinkConfig(), wl)
    assert small.conv1.out_channels < wl.model.conv1.out_channels
    blob = onnx_bytes(small, wl.test.x[:2])
    out = ort_predict(session(blob), wl.test.x)
    assert (out - predict(small, wl.test.x)).abs().max().item() <= 1e-4
    assert len(blob) < len(fp32_export("digits-cnn"))


def test_fp16_model_exports_with_half_inputs():
    wl = sample_models.load("digits-mlp")
    half = wl.model.half()
    blob = fp16_export("digits-mlp")
    sess = session(blob)
    assert sess.get_inputs()[0].type == "tensor(float16)"
    out = ort_predict(sess, wl.test.x)
    ref = predict(half, wl.test.x)
    assert (out - ref).abs().max().item() <= 0.05  # fp16 arithmetic in two runtimes
    assert (out.argmax(1) == ref.argmax(1)).float().mean().item() >= 0.99
    assert len(blob) < 0.6 * len(fp32_export("digits-mlp"))


@pytest.mark.slow
def test_torch_ao_dynamic_model_exports_and_an_unknown_int8_layout_is_refused_in_one_line():
    wl = sample_models.load("digits-mlp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.ao.quantization.quantize_dynamic(wl.model, {nn.Linear}, dtype=torch.qint8)
    check_exportable(q)  # dynamic int8 deploys as ONNX Runtime dynamic int8
    proto = to_onnx(q, wl.test.x[:2])
    assert "MatMulInteger" in {n.op_type for n in proto.graph.node}
    agree = (ort_predict(session(proto), wl.test.x).argmax(1) == predict(q, wl.test.x).argmax(1)).float()
    assert agree.mean().item() >= 0.99
    # an eager int8 model built by hand around stubs (not one of the library's layouts): one line, no export
    fc = nn.Sequential(torch.ao.quantization.QuantStub(), nn.Linear(64, 10), torch.ao.quantization.DeQuantStub())
    fc.qconfig = torch.ao.quantization.get_default_qconfig("x86")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.ao.quantization.prepare(fc, inplace=True)
        fc(wl.calib.x)
        torch.ao.quantization.convert(fc, inplace=True)
    with pytest.raises(CompressionError) as e:
        check_exportable(fc)
    msg = str(e.value)
    assert "\n" not in msg and "not exportable" in msg and "engine='onnxruntime'" in msg
    with pytest.raises(CompressionError):
        to_onnx(fc, wl.test.x[:2])


@pytest.mark.slow
def test_export_failure_is_one_line():
    class DataDependent(nn.Module):
        def forward(self, x):
            return x[x > 0.5].sum().reshape(1, 1).expand(x.shape[0], 1) if x.sum() > 0 else x[:, :1]

    with pytest.raises(CompressionError) as e:
        to_onnx(DataDependent(), torch.rand(2, 4))
    assert "\n" not in str(e.value) and str(e.value).startswith("export:")


@pytest.mark.slow
def test_save_is_atomic_and_size_counts_external_data(tmp_path):
    wl = sample_models.load("digits-mlp")
    path = tmp_path / "m.onnx"
    inline = export_onnx(wl.model, wl.test.x[:2], path)
    assert inline.data_path is None and external_data_files(path) == []
    assert onnx_size_bytes(path) == path.stat().st_size == inline.size_bytes
    # external data: weights beside the graph, the size counts both files, ORT loads it from the path
    ext = save_onnx(onnx.ModelProto.FromString(fp32_export("digits-mlp")), path, external_data=True)
    assert ext.data_path == tmp_path / "m.onnx.data" and external_data_files(path) == [ext.data_path]
    assert onnx_size_bytes(path) == path.stat().st_size + ext.data_path.stat().st_size
    assert ext.data_path.stat().st_size > 0.9 * size_bytes(wl.model) * 0.9
    assert path.stat().st_size < 0.2 * ext.data_path.stat().st_size
    out = ort_predict(session(path), wl.test.x)
    assert (out - reference("digits-mlp")).abs().max().item() <= 1e-4
    assert oct(ext.data_path.stat().st_mode & 0o777) == oct(path.stat().st_mode & 0o777)
    # writing inline again removes the now stale data file; no temporary files are left behind
    save_onnx(onnx.ModelProto.FromString(fp32_export("digits-mlp")), path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]
    with pytest.raises(CompressionError, match=".onnx"):
        save_onnx(onnx.ModelProto.FromString(fp32_export("digits-mlp")), tmp_path / "m.txt")


@pytest.mark.slow
def test_measure_ort_is_typed_and_honest(tmp_path):
    wl = sample_models.load("digits-mlp")
    torch_stats = measure(wl.model, wl, name="mlp", with_latency=False)
    stats = measure_ort(wl.model, wl, name="mlp", batch_size=4, min_run_time=0.02)
    assert stats.runtime == "onnxruntime" and torch_stats.runtime == "torch"
    assert stats.accuracy == torch_stats.accuracy  # fp32 in both runtimes: the same predictions
    assert stats.flops == torch_stats.flops and stats.params == torch_stats.params
    assert stats.size_bytes == len(fp32_export("digits-mlp"))
    assert stats.latency_ms > 0 and stats.batch_size == 4 and stats.threads == 1
    path = tmp_path / "m.onnx"
    save_onnx(onnx.ModelProto.FromString(fp32_export("digits-mlp")), path, external_data=True)
    from_file = measure_ort(path, wl, with_latency=False)
    assert from_file.size_bytes == onnx_size_bytes(path) and from_file.flops == 0  # no source model given
    q = measure_ort(ort_quantize(fp32_export("digits-mlp"), "dynamic"), wl, with_latency=False,
                    source=wl.model)
    assert q.size_bytes < 0.4 * stats.size_bytes and q.flops == stats.flops
    assert {layer.bits for layer in q.layers if layer.params >= 1000} == {8}
    sess = session(fp32_export("digits-mlp"))
    assert ort_accuracy(sess, wl.test.x, wl.test.y) == stats.accuracy
    median, iqr, runs = ort_latency(sess, wl.test.x[:1], min_run_time=0.02)
    assert median > 0 and runs > 0


def test_session_uses_one_thread_and_bad_files_are_one_line(tmp_path):
    sess = session(fp32_export("digits-mlp"))
    assert sess.get_session_options().intra_op_num_threads == 1
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(CompressionError) as e:
        session(bad)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_runtime_comparison_and_explanation_are_measured():
    rows = runtime_comparison("digits-mlp", min_run_time=0.01)
    paths = {(r["runtime"], r["path"]) for r in rows}
    assert paths == {("torch", "fp32"), ("torch", "int8 dynamic"), ("torch", "int8 static"), ("onnxruntime", "fp32"),
                     ("onnxruntime", "int8 dynamic"), ("onnxruntime", "int8 static QDQ"),
                     ("onnxruntime", "int8 static QDQ, torch ranges")}
    assert all(r["agreement"] >= 0.99 for r in rows)
    best = fastest_int8(rows)
    assert best["ms_b32"] == min(r["ms_b32"] for r in rows if r["path"] != "fp32")
    assert best["at_least_fp32_speed"] == (best["speedup_b32"] >= 1.0) and set(best["per_runtime"]) == {
        "torch", "onnxruntime"}
    torch_fp32 = next(b for b in rows if b["runtime"] == "torch" and b["path"] == "fp32")
    for r in rows:
        base = next(b for b in rows if b["runtime"] == r["runtime"] and b["path"] == "fp32")
        assert r["speedup_b32"] == pytest.approx(base["ms_b32"] / r["ms_b32"])
        assert r["vs_torch_fp32_b32"] == pytest.approx(torch_fp32["ms_b32"] / r["ms_b32"])
    assert best["goal_met_vs_torch_fp32"] == (best["vs_torch_fp32_b32"] >= 1.0)
    text = runtime_lesson().why_runtime_matters("digits-mlp", rows)
    ort_dyn = next(r for r in rows if r["runtime"] == "onnxruntime" and r["path"] == "int8 dynamic")
    assert f"{ort_dyn['ms_b32']:.3f}" in text and "VNNI" in text and "digits-mlp" in text


def _cli(*args):
    """Run the CLI in this process (a subprocess would re-import torch and onnx: seconds per call)."""
    import contextlib
    import io
    from types import SimpleNamespace

    from compression_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.mark.slow
def test_cli_export_and_measure_runtime(tmp_path):
    out = tmp_path / "cnn.onnx"
    r = _cli("export", "digits-cnn", "--onnx", str(out), "--int8", "static")
    assert r.returncode == 0, r.stderr
    wl = sample_models.load("digits-cnn")
    agree = (ort_predict(session(out), wl.test.x).argmax(1) == reference("digits-cnn").argmax(1)).float()
    assert agree.mean().item() >= 0.99
    r = _cli("measure", "--model", "digits-mlp", "--runtime", "onnxruntime", "--json")
    assert r.returncode == 0, r.stderr
    import json

    stats = json.loads(r.stdout)
    assert stats["runtime"] == "onnxruntime" and stats["size_bytes"] == len(fp32_export("digits-mlp"))
    r = _cli("measure", "--model", "digits-mlp", "--runtime", "tensorflow")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "runtime" in r.stderr
    r = _cli("export", str(tmp_path / "missing.pt"), "--onnx", str(out))
    assert r.returncode == 2 and r.stderr.startswith("error:") and r.stderr.count("\n") == 1


@pytest.mark.slow
def test_cli_exports_a_bundle(tmp_path):
    from compression_core.bundle import save_bundle
    from compression_core.prune import UnstructuredPruneConfig, prune
    from compression_core.recipe import parse_recipe

    recipe = parse_recipe({"model": "digits-mlp", "steps": [{"kind": "prune_unstructured", "amount": 0.5}]})
    wl = sample_models.load("digits-mlp")
    pruned = prune(wl.model, UnstructuredPruneConfig(amount=0.5), wl)
    save_bundle(tmp_path / "m.bundle.pt", recipe, pruned)
    out = tmp_path / "m.onnx"
    r = _cli("export", str(tmp_path / "m.bundle.pt"), "--onnx", str(out))
    assert r.returncode == 0, r.stderr
    got = ort_predict(session(out), wl.test.x)
    assert (got - predict(pruned, wl.test.x)).abs().max().item() <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bundle.pt", "m.onnx"]
