"""transformers' Conv1D (GPT-2's linear layers: weight (in, out), y = x @ W + b) and tied parameters (GPT-2's lm_head
IS its token embedding) through every technique that takes Linear (issue 25, build item 1).

Oracle: the same GPT-2 with each Conv1D converted to an equivalent nn.Linear (Torch-Pruning has no Conv1D handling of
its own) gives the same result: the same sparsity pattern, the same int8/int4 outputs, the same shrunk shapes. Tied
weights are counted once, stored once, and quantized together or left alone with a note (refused when named).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import zoo
from compression_core import CompressionError, measure, predict, size_bytes
from compression_core.linear_like import (conv1d_names, convert_to_linear, is_conv1d, tied_partners, to_conv1d,
                                          to_linear, weight_oi)
from compression_core.prune import ShrinkConfig, StructuredPruneConfig, UnstructuredPruneConfig, prune
from compression_core.quantize import (DynamicInt8Config, EmbeddingInt8Config, FakeQuantConfig, Int4Config,
                                       StaticInt8Config, quantize)
from compression_core.recipe import apply_recipe, growth_note
from compression_core.targets import resolve_targets
from compression_core.workload import Workload

GPT2_PARAMS = 528_896  # GPT2Config(n_layer=2, n_embd=128, n_head=4, vocab 1000, n_positions 32), the tie once
GPT2_DOUBLE = GPT2_PARAMS + 1000 * 128  # what counting lm_head and wte separately gave


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gpt2():
    return zoo.gpt2()


@pytest.fixture(scope="module")
def gpt2_linear(gpt2):
    """The oracle: the same model and data with every Conv1D converted to an equivalent nn.Linear."""
    model = copy.deepcopy(gpt2.model)
    assert len(convert_to_linear(model)) == 8
    return Workload(name="gpt2-linear", model=model, train=gpt2.train, calib=gpt2.calib, test=gpt2.test,
                    metric="agreement")


@pytest.fixture(scope="module")
def tied():
    return zoo.tied()


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> bool:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


# ------------------------------------------------------------------------------------------------ the helper
def test_conv1d_to_linear_and_back_is_exact_with_masks():
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    conv = Conv1D(6, 5)
    nn.init.normal_(conv.bias)
    torch.nn.utils.prune.random_unstructured(conv, "weight", amount=0.5)
    x = torch.randn(3, 4, 5)
    lin = to_linear(conv)
    assert type(lin) is nn.Linear and lin.weight.shape == (6, 5)
    assert torch.equal(lin.weight_mask, conv.weight_mask.t())
    assert _close(lin(x), conv(x), 1e-6)
    back = to_conv1d(lin)
    assert is_conv1d(back) and back.weight.shape == (5, 6) and (back.nf, back.nx) == (6, 5)
    assert torch.equal(back.weight, conv.weight) and torch.equal(back(x), conv(x))
    assert torch.equal(weight_oi(conv), conv.weight.t())


def test_conv1d_is_selected_by_type_and_named_in_refusals(gpt2):
    names = resolve_targets(gpt2.model, None, types=(nn.Linear,))
    assert names[:4] == ["transformer.h.0.attn.c_attn", "transformer.h.0.attn.c_proj", "transformer.h.0.mlp.c_fc",
                         "transformer.h.0.mlp.c_proj"] and names[-1] == "lm_head"
    with pytest.raises(CompressionError, match=r"Linear/Conv1D layers are: transformer\.h\.0\.attn\.c_attn") as e:
        resolve_targets(gpt2.model, ["nope"], types=(nn.Linear,))
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------------ measure
def test_tied_parameters_are_counted_once(gpt2, tied):
    assert tied_partners(gpt2.model) == {"transformer.wte": ["lm_head"], "lm_head": ["transformer.wte"]}
    stats = measure(gpt2.model, gpt2, with_latency=False)
    assert stats.params == GPT2_PARAMS == sum(p.numel() for p in gpt2.model.parameters()) != GPT2_DOUBLE
    assert "lm_head" not in [r.name for r in stats.layers]  # counted with transformer.wte
    t = measure(tied.model, tied, with_latency=False)
    assert t.params == sum(p.numel() for p in tied.model.parameters()) == 12_512


def test_the_agreement_metric_scores_every_position(gpt2):
    assert gpt2.score(gpt2.model) == 1.0  # (B, T, vocab) logits against (B, T) targets: a fraction, not B*T / B


# ------------------------------------------------------------------------------------------------ oracle: pruning
def _conv_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """{layer: weight mask as (out, in)} of every masked linear-like layer."""
    return {n: (m.weight_mask.t() if is_conv1d(m) else m.weight_mask) for n, m in model.named_modules()
            if hasattr(m, "weight_mask")}


def test_unstructured_same_sparsity_pattern_as_linear(gpt2, gpt2_linear):
    cfg = UnstructuredPruneConfig(amount=0.5)
    a, b = prune(gpt2.model, cfg, gpt2), prune(gpt2_linear.model, cfg, gpt2_linear)
    ma, mb = _conv_masks(a), _conv_masks(b)
    assert len(ma) == 8 and ma.keys() == mb.keys()
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert all(is_conv1d(a.get_submodule(k)) for k in ma)  # still the model's own Conv1D layers
    assert _close(predict(a, gpt2.test.x), predict(b, gpt2.test.x))


@pytest.mark.parametrize("unit", ["neurons", "heads"])
def test_structured_and_shrink_same_as_linear(gpt2, gpt2_linear, unit):
    cfg = StructuredPruneConfig(amount=0.5, unit=unit)
    a, b = prune(gpt2.model, cfg, gpt2), prune(gpt2_linear.model, cfg, gpt2_linear)
    ma, mb = _conv_masks(a), _conv_masks(b)
    assert ma and ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    sa, sb = prune(a, ShrinkConfig(), gpt2), prune(b, ShrinkConfig(), gpt2_linear)
    shapes_a = {n: tuple(weight_oi(m).shape) for n, m in sa.named_modules() if is_conv1d(m)}
    shapes_b = {n: tuple(m.weight.shape) for n, m in sb.named_modules() if n in shapes_a}
    assert len(shapes_a) == 8 and shapes_a == shapes_b  # shrunk layers are Conv1D again, of the Linear's sizes
    assert sum(p.numel() for p in sa.parameters()) == sum(p.numel() for p in sb.parameters()) < GPT2_PARAMS
    assert _close(predict(sa, gpt2.test.x), predict(a, gpt2.test.x), 1e-4)


def test_prune_never_raises_a_traceback(gpt2, monkeypatch):
    from compression_core.prune import structured

    def broken(*a, **k):
        raise RuntimeError("inputs argument to grad() cannot be empty\nmore")

    monkeypatch.setattr(structured, "graph_for", broken)
    with pytest.raises(CompressionError, match=r"^model: prune_structured cannot be applied to this model "
                                               r"\(RuntimeError: inputs argument to grad\(\) cannot be empty\)$"):
        prune(gpt2.model, StructuredPruneConfig(unit="heads"), gpt2)


# -------------------------------------------------------------------------------------------- oracle: quantizing
@pytest.mark.parametrize("cfg", [DynamicInt8Config(), Int4Config(), FakeQuantConfig(bits=4), StaticInt8Config()],
                         ids=["dynamic", "int4", "fake4", "static"])
def test_quantized_outputs_equal_the_linear_models(gpt2, gpt2_linear, cfg):
    a, b = quantize(gpt2.model, cfg, gpt2), quantize(gpt2_linear.model, cfg, gpt2_linear)
    ya, yb = predict(a, gpt2.test.x), predict(b, gpt2.test.x)
    if isinstance(cfg, StaticInt8Config):
        assert _close(ya, yb, 1e-3)  # float sums in another order before calibration
    else:
        assert torch.equal(ya, yb)
    assert not conv1d_names(a) or isinstance(cfg, FakeQuantConfig)  # real int8/int4 replaced every Conv1D
    if isinstance(cfg, FakeQuantConfig):  # wrapped, not swapped: still Conv1D, per-output-channel scales
        assert len(conv1d_names(a)) == 8
    else:
        assert size_bytes(a) < 0.5 * size_bytes(gpt2.model)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [DynamicInt8Config(engine="onnxruntime"), Int4Config(engine="onnxruntime")],
                         ids=["ort-dynamic", "ort-int4"])
def test_onnxruntime_engines_take_conv1d_as_matmul(gpt2, gpt2_linear, cfg):
    from compression_core.ort_session import as_proto

    a, b = quantize(gpt2.model, cfg, gpt2), quantize(gpt2_linear.model, cfg, gpt2_linear)
    ops = [n.op_type for n in as_proto(a.onnx_bytes).graph.node]
    want = "MatMulNBits" if isinstance(cfg, Int4Config) else "MatMulInteger"
    assert ops.count(want) == 8 and "Gemm" not in ops
    assert sorted(ops) == sorted(n.op_type for n in as_proto(b.onnx_bytes).graph.node)
    assert _close(predict(a, gpt2.test.x), predict(b, gpt2.test.x), 1e-4)
    stats = measure(a, gpt2, with_latency=False)
    assert stats.runtime == "onnxruntime" and stats.size_bytes < 0.5 * size_bytes(gpt2.model)  # was 1.052x, "torch"
    assert stats.params == GPT2_PARAMS
    tables = [i.name for i in as_proto(a.onnx_bytes).graph.initializer if sorted(i.dims) == [128, 1000]]
    assert len(tables) == 1  # the tied embedding / lm_head matrix stored once (not also as its folded transpose)


def test_float_onnx_export_has_matmul_not_gemm(gpt2):
    from compression_core.onnx_io import export_float

    ops = [n.op_type for n in export_float(gpt2.model, gpt2.test.x[:2]).graph.node]
    assert "Gemm" not in ops and ops.count("MatMul") >= 8
    assert conv1d_names(gpt2.model)  # the export worked on a copy


# --------------------------------------------------------------------------------------------- tied weights
def test_int8_embeddings_quantize_the_tied_head_together(gpt2, tied):
    for wl, head, emb in ((gpt2, "lm_head", "transformer.wte"), (tied, "out", "embed")):
        out = quantize(wl.model, EmbeddingInt8Config(), wl)
        h, e = out.get_submodule(head), out.get_submodule(emb)
        assert h.qweight is e.qweight and h.scale is e.scale  # one copy of the codes
        assert size_bytes(out) < 0.85 * size_bytes(wl.model)  # was 1.051x on gpt2: the tied head stayed fp32
        assert wl.score(out) >= 0.99
        reloaded = copy.deepcopy(out)
        reloaded.load_state_dict(out.state_dict())
        assert reloaded.get_submodule(head).qweight is reloaded.get_submodule(emb).qweight


@pytest.mark.parametrize("cfg", [Int4Config(include_classifier=True), DynamicInt8Config(), FakeQuantConfig(
    include_classifier=True)], ids=["int4", "dynamic", "fake"])
def test_a_tied_head_stays_float_with_a_note_or_is_refused_when_named(gpt2, cfg):
    notes = []
    from compression_core.technique import StepContext, apply_step

    ctx = StepContext(data=gpt2, progress=lambda f, m: notes.append(m))
    out = apply_step(gpt2.model, cfg, ctx)
    assert out.lm_head.weight is out.transformer.wte.weight  # still tied, stored once
    assert any("lm_head (tied to transformer.wte)" in n for n in notes)
    if not isinstance(cfg, FakeQuantConfig):
        assert size_bytes(out) < 0.5 * size_bytes(gpt2.model)  # was 1.032x for int4 with include_classifier
    named = type(cfg)(**{**cfg.model_dump(exclude={"kind"}), "targets": ("lm_head",)})
    with pytest.raises(CompressionError, match=r"^targets: 'lm_head' shares its weight with 'transformer.wte' "
                                               r"\(tied parameters\)"):
        quantize(gpt2.model, named, gpt2)


def test_pruning_leaves_a_tied_layer_dense(tied):
    out = prune(tied.model, UnstructuredPruneConfig(amount=0.5, include_classifier=True), tied)
    assert not hasattr(out.out, "weight_mask") and out.out.weight is out.embed.weight
    assert hasattr(out.fc1, "weight_mask")
    with pytest.raises(CompressionError, match="tied parameters"):
        prune(tied.model, UnstructuredPruneConfig(targets=["out"], include_classifier=True), tied)


def test_a_step_whose_file_grows_says_why(tied):
    recipe = {"version": 1, "model": "tests/zoo.py:tied", "steps": [{"kind": "fake_quant", "bits": 8,
                                                                      "activation_bits": 8}]}
    result = apply_recipe(recipe, workload=tied, with_latency=False, measure_before=False, measure_after=False)
    assert "the file grew" in result.steps[0].notes
    assert "simulated quantization keeps the float weights" in result.steps[0].notes
    untied = copy.deepcopy(tied.model)
    untied.out.weight = nn.Parameter(untied.embed.weight.detach().clone())
    line = growth_note(tied.model, untied, size_bytes(tied.model), size_bytes(untied))
    assert line.startswith("the file grew") and "tied weights of embed, out are now stored separately" in line
