"""Low-rank factorisation (``lowrank``): truncated SVD and Tucker-2 against exact arithmetic.

Oracles: at full rank the factors compute the original layer; the SVD truncation error is the Eckart-Young bound;
Tucker-2's three convs compute the conv with the HOSVD reconstruction of the kernel (built here independently with
mode products); a whole factorised model computes what the original model computes with each factorised layer's
weight replaced by its low-rank reconstruction. Plus: parameter counts, the input unchanged, one-line refusals,
replay shapes and a bundle round trip, sensitivity levels, and foreign architectures from tests/zoo.py.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import zoo
from compression_core import CompressionError, LowRankConfig, measure, prune, sensitivity
from compression_core.bundle import bundle_bytes, load_bundle
from compression_core.prune.lowrank import (
    Factorized,
    energy_rank,
    factorize_conv_svd,
    factorize_linear,
    low_rank_weight,
    plan_layer,
    plans,
    rank_of,
    ratio_for_params,
    svd_factors,
    tucker2_conv,
    tucker2_factors,
)
from compression_core.recipe import recipe_class, validate_recipe
from compression_core.technique import StepContext, apply_step


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


class MLP(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 40), nn.ReLU(), nn.Linear(40, 10))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 24, 3, stride=2, padding=2, dilation=2)
        self.point = nn.Conv2d(24, 32, 1, bias=False)
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = F.relu(self.dw(F.relu(self.point(x))))
        return self.fc(x.mean((2, 3)))


def _seeded(cls, seed=0):
    torch.manual_seed(seed)
    return cls().eval()


# ------------------------------------------------------------------------------------------------ oracles
@pytest.mark.parametrize("shape", [(40, 64), (64, 40), (30, 30)])
def test_full_rank_svd_computes_the_original_linear(shape):
    out_f, in_f = shape
    layer = nn.Linear(in_f, out_f)
    f = factorize_linear(layer, min(shape))
    x = torch.randn(8, in_f, generator=_gen())
    assert isinstance(f, Factorized) and [type(m) for m in f] == [nn.Linear, nn.Linear]
    assert f[0].bias is None and torch.equal(f[1].bias, layer.bias)
    assert _rel(f(x), layer(x)) < 1e-5


def test_full_rank_conv_svd_and_tucker2_compute_the_original_conv():
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1, dilation=1)
    x = torch.randn(2, 6, 9, 9, generator=_gen())
    for f in (factorize_conv_svd(conv, min(10, 6 * 9)), tucker2_conv(conv, 6, 10)):
        assert _rel(f(x), conv(x)) < 1e-5
    conv = nn.Conv2d(4, 5, (3, 2), padding=(2, 1), dilation=2, padding_mode="reflect", bias=False)
    x = torch.randn(2, 4, 8, 7, generator=_gen(1))
    assert _rel(tucker2_conv(conv, 4, 5)(x), conv(x)) < 1e-5


@pytest.mark.parametrize("rank", [1, 5, 17])
def test_svd_truncation_error_is_the_eckart_young_bound(rank):
    w = torch.randn(30, 50, generator=_gen(rank), dtype=torch.float64)
    first, second, s = svd_factors(w, rank)
    err = torch.linalg.matrix_norm(w - second @ first)  # Frobenius
    bound = s[rank:].pow(2).sum().sqrt()
    assert abs(float(err) - float(bound)) <= 1e-10 * float(s.norm())
    # and the factorised Linear computes exactly that matrix: its error on the identity is the same bound
    layer = nn.Linear(50, 30, bias=False, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(w)
    f = factorize_linear(layer, rank)
    eye = torch.eye(50, dtype=torch.float64)
    assert abs(float(torch.linalg.matrix_norm(f(eye).detach().t() - w)) - float(bound)) <= 1e-10 * float(s.norm())


def _hosvd_reconstruction(w: torch.Tensor, r_in: int, r_out: int) -> torch.Tensor:
    """Tucker-2 by HOSVD written out with mode products (independent of the library's einsum strings)."""
    w = w.double()
    c_out, c_in, kh, kw = w.shape
    u0 = torch.linalg.svd(w.reshape(c_out, -1))[0][:, :r_out]  # (C_out, R_out)
    u1 = torch.linalg.svd(w.permute(1, 0, 2, 3).reshape(c_in, -1))[0][:, :r_in]  # (C_in, R_in)
    p0 = u0 @ u0.t()  # projector on the mode-0 subspace
    p1 = u1 @ u1.t()
    x = torch.tensordot(p0, w, dims=([1], [0]))  # mode-0 product (C_out, C_in, kh, kw)
    x = torch.tensordot(p1, x, dims=([1], [1])).permute(1, 0, 2, 3)  # mode-1 product
    return x


def test_tucker2_output_equals_the_conv_with_the_direct_reconstruction():
    torch.manual_seed(0)
    conv = nn.Conv2d(12, 20, 3, stride=1, padding=1)
    x = torch.randn(4, 12, 8, 8, generator=_gen())
    f = tucker2_conv(conv, 5, 7)
    assert [m.weight.shape for m in f] == [(5, 12, 1, 1), (7, 5, 3, 3), (20, 7, 1, 1)]
    assert f[1].stride == conv.stride and f[1].padding == conv.padding and f[1].dilation == conv.dilation
    w_hat = _hosvd_reconstruction(conv.weight.detach(), 5, 7).float()
    assert _rel(f(x), F.conv2d(x, w_hat, conv.bias, conv.stride, conv.padding, conv.dilation)) < 1e-5
    u_in, core, u_out = tucker2_factors(conv.weight.detach(), 5, 7)
    assert torch.allclose(u_in.t() @ u_in, torch.eye(5, dtype=torch.float64), atol=1e-10)  # orthonormal factors
    assert torch.allclose(u_out.t() @ u_out, torch.eye(7, dtype=torch.float64), atol=1e-10)
    assert plan_layer("c", conv, ratio=0.4).ranks == (5, 8)  # ratio 0.4: ranks 5 of 12, 8 of 20
    w_58 = _hosvd_reconstruction(conv.weight.detach(), 5, 8).float()
    assert float((low_rank_weight(conv, 0.4) - w_58).abs().max()) < 1e-6


def test_ranks_by_ratio_energy_and_parameter_budget():
    assert [rank_of(q, 300) for q in (1.0, 0.5, 0.36, 0.001)] == [300, 150, 108, 1]
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # squares 16, 4, 1, 1 of 22
    assert [energy_rank(s, e) for e in (0.5, 16 / 22, 0.8, 21 / 22, 0.99, 1.0)] == [1, 1, 2, 3, 4, 4]
    layer = nn.Linear(784, 300)
    plan = plan_layer("fc", layer, param_ratio=0.5)
    assert plan.ranks == (108,) and plan.after == 108 * (784 + 300) <= 0.5 * 784 * 300 < 109 * (784 + 300)
    assert rank_of(ratio_for_params(layer, 0.5), 300) == 108
    conv = nn.Conv2d(16, 32, 3)
    q = ratio_for_params(conv, 0.5)
    p = plan_layer("c", conv, ratio=q)
    assert p.after <= 0.5 * conv.weight.numel() and p == plan_layer("c", conv, param_ratio=0.5)


# --------------------------------------------------------------------------------------------- the step
def _model_with_reconstructions(model: nn.Module, cfg: LowRankConfig) -> nn.Module:
    """The oracle model: each layer the step factorises keeps its type, its weight replaced by the reconstruction."""
    oracle = copy.deepcopy(model)
    for plan in plans(oracle, cfg)[0]:
        m = oracle.get_submodule(plan.name)
        ratio = cfg.overrides.get(plan.name, cfg.rank_ratio)
        with torch.no_grad():
            m.weight.copy_(low_rank_weight(m, ratio, cfg.method))
    return oracle


@pytest.mark.parametrize("method", ["auto", "svd", "tucker2"])
def test_the_step_computes_the_reconstructions_and_parameters_fall_as_computed(method):
    model = _seeded(CNN)
    before = copy.deepcopy(model.state_dict())
    cfg = LowRankConfig(method=method, rank_ratio=0.4, include_classifier=True)
    ctx = StepContext(data=None)
    out = apply_step(model, cfg, ctx)
    x = torch.randn(4, 3, 12, 12, generator=_gen())
    assert _rel(out(x), _model_with_reconstructions(model, cfg)(x)) < 1e-5
    for k, v in model.state_dict().items():  # the input is unchanged
        assert torch.equal(v, before[k]), k
    layer_plans, skipped = plans(model, cfg)
    n_before = sum(p.numel() for p in model.parameters())
    n_after = sum(p.numel() for p in out.parameters())
    assert n_after == n_before - sum(p.before - p.after for p in layer_plans) < n_before
    assert "dw" in skipped and "groups=32" in skipped["dw"] and not isinstance(out.dw, Factorized)
    expected = {"auto": {"conv1": "tucker2", "conv2": "tucker2", "point": "svd", "fc": "svd"},
                "svd": {"conv1": "svd", "conv2": "svd", "point": "svd", "fc": "svd"},
                "tucker2": {"conv1": "tucker2", "conv2": "tucker2", "point": "tucker2"}}[method]
    got = {p.name: p.method for p in layer_plans}
    assert {n: got.get(n) for n in expected if n in got} == {n: v for n, v in expected.items() if n in got}
    for p in layer_plans:
        assert isinstance(out.get_submodule(p.name), Factorized)
        assert len(out.get_submodule(p.name)) == (3 if p.method == "tucker2" else 2)
    assert any("left as is: " in n and "dw" in n for n in ctx.notes)


def test_layers_that_would_not_shrink_are_left_and_the_classifier_by_default():
    model = _seeded(MLP)  # Linear 64->48 ("0"), 48->40 ("2"), the classifier 40->10 ("4")
    cfg = LowRankConfig(rank_ratio=0.45, overrides={"re:2": 0.6})
    ctx = StepContext(data=None)
    out = apply_step(model, cfg, ctx)
    assert isinstance(out[0], Factorized) and out[0][0].out_features == 22  # 22 * (64 + 48) = 2464 < 3072
    assert isinstance(out[2], nn.Linear)  # 24 * (48 + 40) = 2112 >= 1920: left as is
    assert isinstance(out[4], nn.Linear)  # the classifier is left alone
    assert ctx.notes == ["factorised 1 layer(s), 3,072 -> 2,464 weights: 0 rank 22/48",
                         "left as is: 2 (rank 24/40 keeps 2,112 of 1,920 weights)"]
    out = prune(model, LowRankConfig(overrides={"0": 0.25, "2": 0.5}, include_classifier=True, rank_ratio=0.2))
    assert [out[0][0].out_features, out[2][0].out_features, out[4][0].out_features] == [12, 20, 2]


def test_refusals_are_one_line():
    model = _seeded(MLP)
    cases = [
        (LowRankConfig(rank_ratio=0.9), "^rank_ratio: no selected layer gets fewer weights"),
        (LowRankConfig(targets=("nope",)), "^targets: unknown layer 'nope'"),
        (LowRankConfig(method="tucker2"), "^targets: no Linear/Conv1D/Conv2d layer selected"),
        (LowRankConfig(method="tucker2", targets=("0",)), "^targets: layer '0' is Linear; method 'tucker2'"),
        (LowRankConfig(overrides={"4": 0.5}), "^overrides: '4' matches none of the selected layers"),
        (LowRankConfig(overrides={"re:(": 0.5}), "^overrides: bad regular expression"),
    ]
    for cfg, pattern in cases:
        with pytest.raises(CompressionError, match=pattern) as e:
            prune(model, cfg)
        assert "\n" not in str(e.value)
    for bad in ({"rank_ratio": 0}, {"rank_ratio": 1.5}, {"energy": 1.2}, {"param_ratio": 1.0},
                {"overrides": {"0": 0.0}}, {"rank_ratio": 0.3, "energy": 0.9}, {"energy": 0.9, "param_ratio": 0.5},
                {"method": "cp"}):
        with pytest.raises(CompressionError) as e:
            validate_recipe({"version": 1, "model": "digits-mlp", "steps": [{"kind": "lowrank", **bad}]})
        assert "\n" not in str(e.value) and "steps[0]" in str(e.value)


def test_replay_builds_the_same_shapes_without_computing_and_a_bundle_round_trips(tmp_path):
    model = _seeded(CNN)
    for cfg in (LowRankConfig(rank_ratio=0.4), LowRankConfig(energy=0.9), LowRankConfig(param_ratio=0.5),
                LowRankConfig(method="svd", overrides={"conv2": 0.25})):
        real = apply_step(model, cfg, StepContext(data=None))
        replayed = apply_step(model, cfg, StepContext(data=None, replay=True))
        assert {k: v.shape for k, v in real.state_dict().items()} == \
               {k: v.shape for k, v in replayed.state_dict().items()}
        assert [type(m) for m in real.modules()] == [type(m) for m in replayed.modules()]
    wl = zoo.flatten_cnn()
    cfg = LowRankConfig(rank_ratio=0.3)
    out = prune(wl.model, cfg, wl)
    recipe = recipe_class().model_validate({"version": 1, "model": "tests/zoo.py:flatten_cnn", "steps": [cfg]})
    back_recipe, back = load_bundle(bundle_bytes(recipe, out), workload=wl)
    assert back_recipe.steps == [cfg]
    with torch.no_grad():
        assert torch.equal(back(wl.test.x[:16]), out(wl.test.x[:16]))


def test_tied_weights_and_attention_out_proj_are_skipped_with_the_reason():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(50, 32)
            self.mid = nn.Linear(32, 32)
            self.head = nn.Linear(32, 50, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(self.mid(self.emb(ids)))

    ctx = StepContext(data=None)
    out = apply_step(_seeded(Tied), LowRankConfig(rank_ratio=0.25, include_classifier=True), ctx)
    assert isinstance(out.mid, Factorized) and isinstance(out.head, nn.Linear)
    assert "head (its weight is tied to emb.weight)" in ctx.notes[-1]
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    with pytest.raises(CompressionError, match="^targets: no selected layer can be factorised .out_proj: "
                                               "nn.MultiheadAttention reads out_proj.weight directly"):
        prune(mha, LowRankConfig(rank_ratio=0.25, include_classifier=True))


def test_transformers_conv1d_is_factorised_like_its_linear():
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D

    torch.manual_seed(0)
    model = nn.Sequential(Conv1D(96, 32), nn.GELU(), Conv1D(32, 96), nn.GELU(), nn.Linear(32, 4)).eval()
    cfg = LowRankConfig(rank_ratio=0.25)
    out = prune(model, cfg)
    assert [type(m) for m in out[0]] == [nn.Linear, nn.Linear] and out[0][0].out_features == 8
    x = torch.randn(3, 5, 32, generator=_gen())
    assert _rel(out(x), _model_with_reconstructions(model, cfg)(x)) < 1e-5
    full = factorize_linear(model[0], 32)
    assert _rel(full(x), model[0](x)) < 1e-5


def test_sensitivity_sweeps_rank_ratios():
    wl = zoo.flatten_cnn()
    s = sensitivity(wl.model, wl, "lowrank")
    assert s.technique == "lowrank" and [c.name for c in s.layers] == ["conv1", "conv2", "fc1"]
    for c in s.layers:
        assert [p[0] for p in c.points] == [1.0, 0.75, 0.5, 0.25, 0.1]
        assert c.points[0][1] == s.baseline_accuracy  # full rank leaves the layer as is
    # a point is the metric of the model with that layer alone factorised
    out = prune(wl.model, LowRankConfig(targets=("fc1",), rank_ratio=0.1), wl)
    assert s.curve("fc1").points[-1][1] == pytest.approx(wl.score(out, "calib"), abs=1e-9)
    with pytest.raises(CompressionError, match=r"^levels: rank ratios must be in \(0, 1\], got 0.0"):
        sensitivity(wl.model, wl, "lowrank", levels=[0.0])


# ---------------------------------------------------------------------------------------- foreign models
@pytest.mark.parametrize("name", ["resnet", "mobilenet", "flatten_cnn", "token_transformer"])
def test_foreign_architectures(name):
    wl = zoo.ZOO[name]()
    cfg = LowRankConfig(rank_ratio=0.5)
    ctx = StepContext(data=wl)
    out = apply_step(wl.model, cfg, ctx)
    assert sum(p.numel() for p in out.parameters()) < sum(p.numel() for p in wl.model.parameters())
    assert measure(out, wl, with_latency=False).params == sum(p.numel() for p in out.parameters())
    x = wl.test.x[:32]
    with torch.no_grad():
        got, want = out(x), _model_with_reconstructions(wl.model, cfg)(x)
    assert torch.isfinite(got).all() and _rel(got, want) < 1e-4, name
    if name == "mobilenet":  # depthwise and grouped convs are left, the others factorised
        assert "features.1.0 (grouped/depthwise conv (groups=16))" in ctx.notes[-1]
        assert "features.3.0 (grouped/depthwise conv (groups=4))" in ctx.notes[-1]
    if name == "token_transformer":  # the feed-forward Linears; MHA's out_proj is read by its parent
        layer = out.encoder.layers[0]
        assert isinstance(layer.linear1, Factorized) and isinstance(layer.linear2, Factorized)
        assert layer.activation_relu_or_gelu == 0 and not isinstance(layer.self_attn.out_proj, Factorized)
        assert any("fused inference path turned off" in n for n in ctx.notes)


def test_the_lenet300_recipe_keeps_half_the_parameters():
    from pathlib import Path

    recipe = validate_recipe(Path(__file__).resolve().parent.parent / "recipes" / "lenet300-lowrank.yaml")
    wl = recipe.workload()
    out = apply_step(wl.model, recipe.steps[0], StepContext(data=wl, replay=True))  # structure only, no training
    assert sum(p.numel() for p in out.parameters()) <= 0.5 * sum(p.numel() for p in wl.model.parameters())
    assert [out.fc1[0].out_features, out.fc2[0].out_features] == [108, 37]


def test_the_budget_fit_picks_rank_ratios_and_meets_the_size():
    from compression_core import fit_budget, size_bytes

    wl = zoo.flatten_cnn()
    budget = int(0.6 * size_bytes(wl.model))
    fit = fit_budget(wl.model, wl, {"technique": "lowrank", "max_size_bytes": budget})
    step = fit.step()
    assert fit.size_kind == "dense" and isinstance(step, LowRankConfig) and step.overrides
    assert all(v < 1 for v in step.overrides.values()) and set(fit.choice) == {"conv1", "conv2", "fc1"}
    out = prune(wl.model, step, wl)
    assert size_bytes(out) == fit.size_bytes <= budget
    assert wl.score(out, "calib") == pytest.approx(fit.accuracy, abs=1e-9)
    from compression_core.budget import FitBudgetConfig

    cfg = FitBudgetConfig(technique="lowrank", max_size_bytes=budget)
    real = apply_step(wl.model, cfg, StepContext(data=wl))
    replayed = apply_step(wl.model, cfg, StepContext(data=wl, replay=True))  # refits: the same choice, same shapes
    assert {k: v.shape for k, v in real.state_dict().items()} == {k: v.shape for k, v in replayed.state_dict().items()}
