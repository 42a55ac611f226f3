"""compression_core.cost: the size, parameters and FLOPs of a configuration computed from shapes and settings, without
applying it, equal what ``measure`` reports for the model the steps produce (``apply_step``): the file within 1 % or
1 KB (container overhead is the only slack allowed; in practice it is byte-exact), parameter counts exactly, and every
other number either exactly or None with the reason stated. Where the library refuses a configuration, so does the
estimate. Every sample model (minilm-topics in the slow set) and every zoo model, for unstructured, structured +
shrink, dynamic/static int8, int4, weight-only int3/int4/int8 (RTN, GPTQ, AWQ), low rank, fp16/bf16, int8
embeddings, fake quant and prune-then-quantize combinations; a few pairs run in the fast set, the whole matrix in
the slow one."""

from __future__ import annotations

import io
from collections import OrderedDict

import pytest
import torch
from torch import nn

import zoo
from compression_core import (
    CompressionError, DynamicInt8Config, EmbeddingInt8Config, FakeQuantConfig, FineTuneConfig, HalfPrecisionConfig,
    Int4Config, LayerPruneConfig, ShrinkConfig, StaticInt8Config, StructuredPruneConfig, ThresholdPruneConfig,
    UnstructuredPruneConfig, resolve_workload, workload_names,
)
from compression_core import inputs as I
from compression_core.cost import estimate_cost
from compression_core.cost_layout import saved_size
from compression_core.measure import flops, layer_stats, size_bytes
from compression_core.prune import LowRankConfig
from compression_core.quantize import WeightOnlyConfig
from compression_core.sparse import sparse_size_bytes
from compression_core.technique import StepContext, apply_step

U, S = UnstructuredPruneConfig, StructuredPruneConfig
CASES = {
    "unstructured-50": [U(amount=0.5)],
    "unstructured-90": [U(amount=0.9)],
    "unstructured-global": [U(amount=0.8, scope="global")],
    "unstructured-random": [U(amount=0.6, importance="random")],
    "threshold": [ThresholdPruneConfig(threshold=0.05)],
    "channels+shrink": [S(amount=0.5, unit="channels"), ShrinkConfig()],
    "neurons+shrink": [S(amount=0.5, unit="neurons"), ShrinkConfig()],
    "heads+shrink": [S(amount=0.5, unit="heads"), ShrinkConfig()],
    "dynamic-int8": [DynamicInt8Config()],
    "static-int8": [StaticInt8Config()],
    "int4": [Int4Config()],
    "int4-asymmetric-per-channel": [Int4Config(symmetric=False, group_size=None, include_classifier=True)],
    "fp16": [HalfPrecisionConfig()],
    "bf16": [HalfPrecisionConfig(dtype="bf16")],
    "int8-embeddings": [EmbeddingInt8Config()],
    "fake-quant-4bit": [FakeQuantConfig(bits=4)],
    "weight-only-int3": [WeightOnlyConfig(bits=3, method="rtn")],
    "weight-only-int8-asymmetric": [WeightOnlyConfig(bits=8, method="rtn", symmetric=False, group_size=32)],
    "weight-only-gptq": [WeightOnlyConfig(bits=4, method="gptq")],
    "weight-only-awq": [WeightOnlyConfig(bits=3, method="awq")],
    "lowrank-ratio": [LowRankConfig(rank_ratio=0.3)],
    "lowrank-params": [LowRankConfig(param_ratio=0.4)],
    "lowrank-energy": [LowRankConfig(energy=0.9)],
    "unstructured+dynamic": [U(amount=0.9), DynamicInt8Config()],
    "unstructured+fake-quant": [U(amount=0.6), FakeQuantConfig(bits=3)],
    "unstructured-global+fake-quant": [U(amount=0.7, scope="global"), FakeQuantConfig(bits=4)],
    "unstructured-twice": [U(amount=0.5), U(amount=0.4, scope="global")],
    "unstructured+static": [U(amount=0.7), StaticInt8Config()],
    "unstructured+int4": [U(amount=0.7), Int4Config()],
    "neurons+shrink+dynamic": [S(amount=0.5, unit="neurons"), ShrinkConfig(), DynamicInt8Config()],
    "channels+shrink+static": [S(amount=0.5, unit="channels"), ShrinkConfig(), StaticInt8Config()],
    "neurons+shrink+int4": [S(amount=0.5, unit="neurons"), ShrinkConfig(), Int4Config()],
    "channels+shrink+fp16": [S(amount=0.5, unit="channels"), ShrinkConfig(), HalfPrecisionConfig()],
}
SAMPLES = [n for n in workload_names() if n not in ("minilm-topics", "tiny-lm")]  # transformers: their own lists
MODELS = SAMPLES + [f"zoo:{n}" for n in zoo.ZOO]
FAST = {  # (model, case) pairs of the fast set: every kind of planner once, on small models (~15 s in all)
    ("digits-mlp", "unstructured-50"), ("digits-mlp", "unstructured-global"), ("digits-mlp", "unstructured-random"),
    ("digits-mlp", "neurons+shrink"), ("digits-mlp", "dynamic-int8"), ("digits-mlp", "static-int8"),
    ("digits-mlp", "int4"), ("digits-mlp", "fake-quant-4bit"), ("digits-mlp", "unstructured+dynamic"),
    ("digits-mlp", "unstructured+fake-quant"), ("digits-cnn", "unstructured-global+fake-quant"),
    ("digits-mlp", "unstructured-twice"),
    ("digits-mlp", "neurons+shrink+int4"), ("digits-cnn", "channels+shrink"), ("digits-cnn", "channels+shrink+fp16"),
    ("digits-cnn", "threshold"), ("digits-vit", "heads+shrink"), ("digits-lstm", "dynamic-int8"),
    ("zoo:resnet", "channels+shrink"), ("zoo:tied", "int8-embeddings"), ("zoo:tied", "fp16"),
    ("digits-mlp", "weight-only-int3"), ("digits-mlp", "weight-only-gptq"), ("digits-cnn", "lowrank-ratio"),
}
# tiny-lm is zoo:gpt2's architecture (Conv1D, tied lm_head), which runs every case: the trained sample runs these
TINY_LM = ["heads+shrink", "int8-embeddings", "weight-only-int3", "neurons+shrink+int4", "lowrank-ratio"]
MINILM = ["unstructured-50", "unstructured-90", "unstructured+dynamic", "unstructured+fake-quant", "neurons+shrink", "heads+shrink",
          "dynamic-int8", "static-int8", "int4", "weight-only-int3", "lowrank-ratio", "fp16", "int8-embeddings"]


def workload(ref: str):
    return zoo.ZOO[ref[4:]]() if ref.startswith("zoo:") else resolve_workload(ref)


def measured(wl, steps) -> dict:
    """What measure reports for the model ``steps`` produce (without evaluating or timing it)."""
    model = wl.model
    for cfg in steps:
        model = apply_step(model, cfg, StepContext(data=wl, seed=0))
    rows = layer_stats(model)
    params, nonzero = sum(r.params for r in rows), sum(r.nonzero for r in rows)
    try:
        sparse = sparse_size_bytes(model) if nonzero < params else None
    except CompressionError:  # a dynamic int8 LSTM's packed objects: measure reports None too
        sparse = None
    total, nz_flops = flops(model, I.take(wl.test.x, slice(0, 1)))
    simulated = any(r.simulated for r in rows)
    return {"size_bytes": size_bytes(model), "sparse_size_bytes": sparse, "params": params,
            "nonzero_params": nonzero, "flops": total, "nonzero_flops": nz_flops,
            "theoretical_size_bytes": sum(r.bits * r.params for r in rows) // 8 if simulated else None}


def close(computed: int, real: int) -> bool:
    return abs(computed - real) <= max(0.01 * real, 1024)


def check(ref: str, case: str) -> None:
    wl = workload(ref)
    steps = CASES[case]
    cost = estimate_cost(wl.model, steps, wl)
    try:
        real = measured(wl, steps)
    except CompressionError as e:
        assert cost.refused, f"the library refuses ({e}) but the estimate gives numbers"
        field = str(e).split(":")[0]
        assert f".{field}:" in cost.refused or f"({steps[0].kind})" in cost.refused or field in cost.refused, \
            (cost.refused, str(e))
        return
    assert not cost.refused, cost.refused
    assert "all" not in cost.unknown, cost.unknown
    assert close(cost.size_bytes, real["size_bytes"]), (cost.size_bytes, real["size_bytes"])
    assert cost.params == real["params"]
    if real["sparse_size_bytes"] is None:
        assert cost.sparse_size_bytes is None
    elif cost.sparse_size_bytes is None:
        assert "sparse_size_bytes" in cost.unknown
    else:
        assert close(cost.sparse_size_bytes, real["sparse_size_bytes"]), (cost.sparse_size_bytes,
                                                                          real["sparse_size_bytes"])
    for key in ("nonzero_params", "flops", "nonzero_flops", "theoretical_size_bytes"):
        value = getattr(cost, key)
        if value is None and real[key] is not None:
            assert key in cost.unknown, f"{key} is None without a reason"
        else:
            assert value == real[key], (key, value, real[key])


PAIRS = [pytest.param(m, c, id=f"{m}-{c}", marks=() if (m, c) in FAST else pytest.mark.slow)
         for m in MODELS for c in CASES]


@pytest.mark.parametrize("ref,case", PAIRS)
def test_computed_numbers_equal_the_measured_artefact(ref, case):
    check(ref, case)


@pytest.mark.slow
@pytest.mark.parametrize("case", MINILM)
def test_computed_numbers_equal_the_measured_artefact_minilm(case):
    check("minilm-topics", case)


@pytest.mark.slow
@pytest.mark.parametrize("case", TINY_LM)
def test_computed_numbers_equal_the_measured_artefact_tiny_lm(case):
    check("tiny-lm", case)


# ------------------------------------------------------------------------------------------------ container
def test_torch_save_size_is_computed_exactly_from_the_pickle_and_the_records():
    """The container arithmetic (data.pkl + 64-byte-aligned records + zip directory) equals torch.save's length on
    state_dicts with float, half, int, bool, empty, 0-d, shared (tied), quantized and Parameter values."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(70, 33, generator=g)
    q = torch.quantize_per_tensor(w, 0.01, 0, torch.qint8)
    cases = [
        OrderedDict(),
        OrderedDict(a=torch.zeros(0), b=torch.zeros(()), c=torch.ones(3, dtype=torch.bool)),
        OrderedDict(a=w, b=w.detach(), c=w[:10]),  # one storage under three keys
        OrderedDict((f"layer{i}.weight", torch.randn(i * 37 + 1, 5, generator=g).half()) for i in range(40)),
        OrderedDict(fc=(q, nn.Parameter(torch.randn(70, generator=g))), d=torch.qint8, n=None),
    ]
    for sd in cases:
        sd._metadata = OrderedDict([("", {"version": 1})])  # type: ignore[attr-defined]
        buf = io.BytesIO()
        torch.save(sd, buf)
        assert saved_size(sd) == len(buf.getvalue())


# ------------------------------------------------------------------------------------------- no running
def test_estimates_do_not_run_or_change_the_model():
    """After the one traced pass per model (graph, FLOPs, cached), estimates of new configurations run no forward
    pass and leave the model's tensors as they were."""
    wl = resolve_workload("digits-cnn")
    model = wl.model
    estimate_cost(model, [S(amount=0.25, unit="channels"), ShrinkConfig()], wl)  # traces once (cached)
    before = {k: (v.data_ptr(), v.clone()) for k, v in model.state_dict().items()}
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in model.modules()]
    try:
        for amount in (0.3, 0.6, 0.8):
            for steps in ([U(amount=amount), DynamicInt8Config()], [S(amount=amount / 2, unit="channels"),
                                                                    ShrinkConfig(), Int4Config()],
                          [U(amount=amount), HalfPrecisionConfig()]):
                cost = estimate_cost(model, steps, wl)
                assert cost.size_bytes and cost.params and not cost.refused
    finally:
        for h in hooks:
            h.remove()
    assert not calls
    for k, v in model.state_dict().items():
        assert v.data_ptr() == before[k][0] and torch.equal(v, before[k][1])


def test_pruning_thresholds_from_sorted_magnitudes_are_the_set_topk_prunes():
    """``kth_cut`` / ``global_cut`` (the l1 mask as ``|w| > cut``, read from sorted magnitudes) give exactly the
    mask torch.nn.utils.prune's L1Unstructured computes, per weight and over several together, or None where a tie
    straddles the cut (topk's choice among equal values is then not arithmetic): weights with ties and prior zeros."""
    import numpy as np
    from torch.nn.utils import prune as torch_prune
    from compression_core.cost_steps import global_cut, kth_cut

    gen = torch.Generator().manual_seed(0)
    ws = [torch.randn(40, 30, generator=gen), torch.randint(-3, 4, (50,), generator=gen).float() * 0.25,
          torch.where(torch.rand(20, 20, generator=gen) < 0.4, 0.0, torch.randn(20, 20, generator=gen)),
          torch.randn(7, generator=gen)]
    ws[0][0, :5] = ws[0][1, 1]  # a few equal magnitudes in a continuous weight

    def torch_mask(t: torch.Tensor, amount: float) -> torch.Tensor:
        return torch_prune.L1Unstructured(amount=amount).compute_mask(t, torch.ones_like(t))

    ties = exact = 0
    for w in ws:
        s = np.sort(w.abs().reshape(-1).numpy())
        for amount in [i / 40 for i in range(1, 40)] + [0.999]:
            k = int(round(amount * w.numel()))
            if k == 0:
                continue
            cut = kth_cut(s, k)
            if cut is None:
                assert k < s.size and s[k] == s[k - 1]
                ties += 1
                continue
            exact += 1
            assert torch.equal((w.abs() > cut).float(), torch_mask(w, amount)), (w.shape, amount)
    for amount in (0.1, 0.33, 0.5, 0.77, 0.95):
        flat = torch.cat([w.reshape(-1) for w in ws])
        k = int(round(amount * flat.numel()))
        got = global_cut([np.sort(w.abs().reshape(-1).numpy()) for w in ws], k)
        s = np.sort(flat.abs().numpy())
        if kth_cut(s, k) is None:
            assert got is None
            ties += 1
            continue
        exact += 1
        cut, each = got
        assert cut == kth_cut(s, k)
        mask = torch_mask(flat, amount)
        assert torch.equal((flat.abs() > cut).float(), mask)
        assert each == [int((part == 0).sum()) for part in mask.split([w.numel() for w in ws])]
    assert ties and exact  # both branches were exercised


def test_pruned_weights_with_ties_and_prior_zeros_are_counted_exactly():
    """The arithmetic zero counts (sorted magnitudes, per layer and global, then fake quantization of the pruned
    weights) equal the applied model's, on a model whose weights hold prior zeros and many equal magnitudes."""
    import copy
    from compression_core.workload import _with

    base = resolve_workload("digits-mlp")
    model = copy.deepcopy(base.model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for i, m in enumerate(x for x in model.modules() if isinstance(x, nn.Linear)):
            if i == 0:  # few distinct magnitudes: ties at almost every cut
                m.weight.copy_(torch.randint(-4, 5, m.weight.shape, generator=gen).float() * 0.1)
            else:  # prior zeros
                m.weight.mul_((torch.rand(m.weight.shape, generator=gen) > 0.3).float())
    wl = _with(base, model=model)
    for steps in ([U(amount=0.5)], [U(amount=0.35, scope="global")], [U(amount=0.6), FakeQuantConfig(bits=3)],
                  [U(amount=0.45, scope="global"), FakeQuantConfig(bits=4)], [U(amount=0.3), U(amount=0.5)]):
        cost = estimate_cost(model, steps, wl)
        real = measured(wl, steps)
        for key in ("params", "nonzero_params", "sparse_size_bytes", "nonzero_flops"):
            assert getattr(cost, key) == real[key], (steps, key, getattr(cost, key), real[key])


# ------------------------------------------------------------------------------------- refusals, unknowns
def test_what_cannot_be_known_before_running_is_none_with_a_reason():
    wl = resolve_workload("digits-mlp")
    real = measured(wl, [U(amount=0.5)])
    trained = estimate_cost(wl.model, [U(amount=0.5), FineTuneConfig(epochs=1)], wl)
    assert trained.size_bytes == real["size_bytes"] and trained.params == real["params"]  # same shapes
    assert trained.nonzero_params is None and "nonzero_params" in trained.unknown  # training moves the weights
    by_importance = estimate_cost(resolve_workload("digits-vit").model, [LayerPruneConfig(count=1)],
                                  resolve_workload("digits-vit"))
    assert by_importance.size_bytes is None and "accuracy drop" in by_importance.unknown["all"]
    ort = estimate_cost(wl.model, [DynamicInt8Config(engine="onnxruntime")], wl)
    assert ort.size_bytes is None and "ONNX" in ort.unknown["all"]
    refused = estimate_cost(wl.model, [EmbeddingInt8Config()], wl)  # no embedding: the library's own refusal
    assert refused.refused.startswith("steps[0].targets: quantize_embedding found no nn.Embedding")


def test_block_removal_and_a_recipe_seeded_as_apply_recipe():
    """prune_layers by name renames the later blocks; a Recipe's steps get apply_recipe's seeds (random scores)."""
    from compression_core.recipe import apply_recipe, load_recipe

    vit = resolve_workload("digits-vit")
    steps = [LayerPruneConfig(names=["blocks.0"])]
    assert estimate_cost(vit.model, steps, vit).size_bytes == measured(vit, steps)["size_bytes"]
    recipe = load_recipe({"model": "digits-mlp", "seed": 3, "steps": [
        {"kind": "prune_structured", "unit": "neurons", "amount": 0.4, "importance": "random"}, {"kind": "shrink"},
        {"kind": "prune_unstructured", "amount": 0.5, "importance": "random"}]})
    cost = estimate_cost(recipe.workload().model, recipe, recipe.workload())
    after = apply_recipe(recipe, with_latency=False, measure_before=False).after
    assert (cost.size_bytes, cost.sparse_size_bytes, cost.params, cost.nonzero_params) == (
        after.size_bytes, after.sparse_size_bytes, after.params, after.nonzero_params)


def test_prepare_estimates_sorts_the_magnitudes_once_and_changes_no_number():
    """``prepare_estimates`` (a live page calls it when a model is opened) does the first estimate's sorting ahead:
    afterwards every unstructured layer's sorted magnitudes are cached for the model, and each estimate equals the
    one made on an unprepared copy of the same model."""
    import copy

    from compression_core import cost as C
    from compression_core import prepare_estimates

    wl = workload("digits-cnn")
    warm, cold = copy.deepcopy(wl.model), copy.deepcopy(wl.model)
    assert prepare_estimates(warm, wl) is True
    kept = {k[1] for k in C._info(warm, wl)._cache if isinstance(k, tuple) and k[0] == "sorted_magnitudes"}
    weights = {f"{n}.weight" for n, m in warm.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}
    assert weights <= kept, weights - kept
    for case in ("unstructured-50", "unstructured+fake-quant", "unstructured-global+fake-quant"):
        assert estimate_cost(warm, CASES[case], wl).model_dump(exclude={"seconds"}) == \
            estimate_cost(cold, CASES[case], wl).model_dump(exclude={"seconds"}), case
