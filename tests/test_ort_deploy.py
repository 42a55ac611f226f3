"""The deploy engine: every quantized model exports to ONNX as what it is and runs in ONNX Runtime (static int8 and QAT
as QDQ with torch's own ranges, dynamic int8 as ORT dynamic int8, int4 as MatMulNBits), a technique's step can run
in ONNX Runtime itself (``engine="onnxruntime"`` -> OrtModule, bundles carry the .onnx file), dict/int inputs keep
their names and dtypes, and ``fastest_engine`` names the faster engine measured now."""

from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

import onnx
import pytest
import torch

import sample_models
import zoo
from compression_core import measure, predict, size_bytes
from compression_core.bundle import load_bundle, save_bundle
from compression_core.onnx_export import export_float, to_onnx
from compression_core.ort import (OrtModule, deploy_onnx, fastest_engine, layer_nodes, ort_predict, session)
from compression_core.quantize import DynamicInt8Config, Int4Config, QATConfig, StaticInt8Config, quantize
from compression_core.recipe import parse_recipe

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _cli(*args):
    """The CLI in this process (a subprocess would re-import torch and onnx: seconds per call)."""
    from compression_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([str(a) for a in args])
    return SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


def _ops(blob) -> set[str]:
    proto = blob if isinstance(blob, onnx.ModelProto) else onnx.ModelProto.FromString(blob)
    return {n.op_type for n in proto.graph.node}


def _int8_initializers(blob) -> int:
    proto = blob if isinstance(blob, onnx.ModelProto) else onnx.ModelProto.FromString(blob)
    return sum(int(torch.tensor(i.dims).prod()) for i in proto.graph.initializer
               if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8))


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(-1) == b.argmax(-1)).float().mean())


@pytest.mark.slow
def test_static_int8_bundle_of_digits_cnn_exports_and_runs_in_onnx_runtime(tmp_path):
    """Issue 15's must-show: `apply recipes/static-int8-digits-cnn.yaml --save-model m.bundle`, then
    `export m.bundle --onnx m.onnx` (it used to fail: "quant0 ... not exportable"), >= 99% agreement in ORT."""
    bundle, out = tmp_path / "m.bundle", tmp_path / "m.onnx"
    r = _cli("apply", ROOT / "recipes" / "static-int8-digits-cnn.yaml", "--save-model", bundle)
    assert r.returncode == 0, r.stderr
    r = _cli("export", bundle, "--onnx", out)
    assert r.returncode == 0, r.stderr
    _, model = load_bundle(bundle)
    wl = sample_models.load("digits-cnn")
    x = wl.test.x
    got = ort_predict(session(out), x)
    assert _agreement(got, predict(model, x)) >= 0.99
    ops = _ops(out.read_bytes())
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # QDQ: ONNX Runtime runs it on int8 kernels
    assert _int8_initializers(out.read_bytes()) >= sum(p.numel() for n, p in wl.model.named_parameters()
                                                       if n.endswith("weight") and p.dim() > 1)
    fp32 = export_float(wl.model, x[:2]).SerializeToString()
    assert out.stat().st_size <= 0.4 * len(fp32)


@pytest.mark.slow
@pytest.mark.first_case_fast
@pytest.mark.parametrize("name", ["resnet", "mobilenet", "same_pad_cnn"])
def test_graph_int8_exports_as_qdq_with_torchs_ranges(name):
    wl = zoo.ZOO[name]()
    q = quantize(wl.model, StaticInt8Config(), wl)
    proto = to_onnx(q, wl.test.x[:2])
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(proto)
    x = wl.test.x
    assert _agreement(ort_predict(session(proto.SerializeToString()), x), predict(q, x)) >= 0.99


@pytest.mark.parametrize("name,cfg,storage", [
    ("digits-cnn", StaticInt8Config(engine="onnxruntime"), "QuantizeLinear"),
    ("digits-lstm", DynamicInt8Config(engine="onnxruntime"), "DynamicQuantizeLSTM"),
    ("mnist-lenet300", Int4Config(engine="onnxruntime"), "MatMulNBits"),
    ("digits-mlp", QATConfig(epochs=1, engine="onnxruntime"), "QuantizeLinear"),
], ids=["static", "dynamic", "int4", "qat"])
def test_engine_onnxruntime_steps_run_in_ort_and_round_trip_through_bundles(tmp_path, name, cfg, storage):
    wl = sample_models.load(name)
    q = quantize(wl.model, cfg, wl)
    assert isinstance(q, OrtModule) and storage in _ops(q.onnx_bytes)
    x = wl.test.x
    assert wl.score(q, "test") >= wl.score(wl.model, "test") - 0.02
    stats = measure(q, wl, with_latency=False)
    assert abs(stats.size_bytes - q.size_bytes) < 2048  # the file is the state: its real bytes
    assert stats.params == sum(p.numel() for p in wl.model.parameters())
    assert deploy_onnx(q, wl) == q.onnx_bytes
    recipe = parse_recipe({"model": name, "steps": [cfg.model_dump(mode="json")]})
    save_bundle(tmp_path / "b.pt", recipe, q)
    _, back = load_bundle(tmp_path / "b.pt")
    assert isinstance(back, OrtModule) and torch.equal(back(x), q(x))


def test_onnxruntime_engine_honours_the_layer_choices():
    wl = sample_models.load("digits-cnn")
    q = quantize(wl.model, StaticInt8Config(engine="onnxruntime", ignore=("fc1",)), wl)
    proto = onnx.ModelProto.FromString(q.onnx_bytes)
    gemm_weights = [n.input[1] for n in proto.graph.node if n.op_type == "Gemm"]
    produced_by = {o: n.op_type for n in proto.graph.node for o in n.output}
    kinds = sorted(produced_by.get(w, "initializer") for w in gemm_weights)
    assert kinds == ["DequantizeLinear", "initializer"]  # fc2 int8, fc1 float as asked


def test_layer_nodes_finds_convs_with_a_folded_batchnorm():
    from compression_core.measure import effective_weight

    wl = sample_models.load("digits-cnn")
    proto = export_float(wl.model, wl.test.x[:2], keep_metadata=True)
    names = ["conv1", "conv2", "fc1", "fc2"]
    weights = {n: effective_weight(wl.model.get_submodule(n)) for n in names}
    found = layer_nodes(proto, names, ("Conv", "Gemm"), weights)
    assert all(len(v) == 1 for v in found.values()) and len({v[0] for v in found.values()}) == 4


@pytest.mark.slow
def test_dict_and_integer_inputs_keep_their_names_and_dtypes():
    wl = zoo.dict_attention()
    x = wl.test.x
    for model in (wl.model, quantize(wl.model, DynamicInt8Config(), wl), quantize(wl.model, DynamicInt8Config(
            engine="onnxruntime"), wl)):
        sess = session(deploy_onnx(model, wl))
        assert [(i.name, i.type) for i in sess.get_inputs()] == [("input_ids", "tensor(int64)"),
                                                                  ("attention_mask", "tensor(int64)")]
        assert _agreement(ort_predict(sess, x), predict(model, x)) >= 0.99
    tok = zoo.token_transformer()
    sess = session(deploy_onnx(tok.model, tok))
    assert sess.get_inputs()[0].type == "tensor(int64)"  # ids up to 5000: a float16 cast would corrupt them
    got = ort_predict(sess, tok.test.x)
    assert (got - predict(tok.model, tok.test.x)).abs().max().item() <= 1e-3


@pytest.mark.slow
def test_int4_in_onnx_runtime_is_matmulnbits_small_and_accurate():
    wl = sample_models.load("mnist-lenet300")
    ort4 = quantize(wl.model, Int4Config(engine="onnxruntime"), wl)
    torch4 = quantize(wl.model, Int4Config(), wl)
    assert ort4.size_bytes <= 0.16 * size_bytes(wl.model)
    assert wl.score(ort4, "test") >= wl.score(wl.model, "test") - 0.01
    deployed = deploy_onnx(torch4, wl)  # the torch-packed model deploys to the same kernel
    assert "MatMulNBits" in _ops(deployed)
    assert _agreement(ort_predict(session(deployed), wl.test.x), predict(torch4, wl.test.x)) >= 0.98


@pytest.mark.slow
def test_fastest_engine_times_both_engines_now_and_says_which():
    wl = sample_models.load("digits-mlp")
    q = quantize(wl.model, StaticInt8Config(), wl)
    r = fastest_engine(q, wl, min_run_time=0.02, rounds=1)
    assert r["engine"] in ("torch", "onnxruntime") and set(r["ms"]) == {"torch", "onnxruntime"}
    assert r["ms"][r["engine"]][32] == min(v[32] for v in r["ms"].values())
    assert r["agreement"] >= 0.99 and r["onnx_bytes"] > 0 and r["engine"] in r["reason"]
    ort_only = fastest_engine(quantize(wl.model, DynamicInt8Config(engine="onnxruntime"), wl), wl,
                              min_run_time=0.02, rounds=1)
    assert ort_only["engine"] == "onnxruntime" and set(ort_only["ms"]) == {"onnxruntime"}
