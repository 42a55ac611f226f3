"""Coupled groups from the traced graph (compression_core.graph over Torch-Pruning's DependencyGraph), on small
foreign architectures (tests/zoo.py's and a few written here; none of them is in sample_models): structured pruning
masks whole groups, shrink removes exactly them (shrunk == masked to 1e-5) with about the parameters Torch-Pruning's
own MetaPruner leaves, heads of nn.MultiheadAttention and of a Hugging Face BERT are pruned and shrunk, and what
cannot be pruned is refused in one line with the reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression_core import CompressionError, Workload
from compression_core.graph import build_graph
from compression_core.prune import LayerPruneConfig, ShrinkConfig, StructuredPruneConfig, prune
from compression_core.prune.importance import group_scores
from zoo import SECNN, DenseNet, DepthwiseCNN, FlattenCNN, ResNet, randomize_bn


# ------------------------------------------------------------------------------------------------ the zoo
# residual, depthwise, flatten, dense-concat and squeeze-excite CNNs are tests/zoo.py's (one copy, shared with the
# benchmarks), at the sizes these tests assert on; the rest are written here
def res_cnn() -> nn.Module:
    """stem 16, BasicBlock(16, 16) (identity shortcut), BasicBlock(16, 32, stride 2) (projection shortcut), fc."""
    return ResNet(c=16)


def dense_cnn() -> nn.Module:
    """stem 16, two DenseLayers concatenating 8 channels each (16 -> 24 -> 32), a 1x1 transition to 24."""
    return DenseNet(c=16, growth=8, layers=2)


class GroupedCNN(nn.Module):
    """A grouped conv (groups=4, neither dense nor depthwise) between pointwise convs."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32)
        self.g, self.b2 = nn.Conv2d(32, 32, 3, 2, 1, groups=4, bias=False), nn.BatchNorm2d(32)
        self.c3 = nn.Conv2d(32, 48, 1)
        self.fc = nn.Linear(48, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.b2(self.g(F.relu(self.b1(self.c1(x))))))  # (B, 32, 4, 4)
        return self.fc(F.relu(self.c3(x)).mean((2, 3)))


class SigmoidCNN(nn.Module):
    """A conv whose channels reach the next conv through a sigmoid (0 -> 0.5): not removable exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(F.relu(self.b(torch.sigmoid(self.a(x)))).mean((2, 3)))


class TinyTransformer(nn.Module):
    def __init__(self, classes: int = 10, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.fc = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 8, 8): 8 tokens of 8 pixels
        return self.fc(self.encoder(self.embed(x.reshape(x.shape[0], 8, 8))).mean(1))


class GRUNet(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.inp, self.gru, self.fc = nn.Linear(8, 16), nn.GRU(16, 24, batch_first=True), nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(torch.relu(self.inp(x.reshape(x.shape[0], 8, 8))))  # (B, 8, 24)
        return self.fc(out[:, -1])


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=16, num_labels=4, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg).eval()


def image_workload(model: nn.Module, n: int = 32) -> Workload:
    torch.manual_seed(0)
    x = torch.randn(n, 1, 8, 8)
    return Workload(name=type(model).__name__, model=model, test=(x, torch.zeros(n, dtype=torch.long)),
                    metric="agreement")


def bert_workload(model: nn.Module) -> Workload:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 50, (16, 10), generator=g)
    mask = torch.ones(16, 10, dtype=torch.long)
    mask[::3, -3:] = 0  # padded sequences
    return Workload(name="tiny-bert", model=model, test=({"input_ids": ids, "attention_mask": mask},
                                                        torch.zeros(16, dtype=torch.long)), metric="agreement")


def _out(model, wl):
    from compression_core import inputs as I

    with torch.no_grad():
        return I.call(model.eval(), wl.test.x)


def _params(model):
    return sum(p.numel() for p in model.parameters())


CNNS = [res_cnn, DepthwiseCNN, GroupedCNN, FlattenCNN, dense_cnn, SECNN]


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.first_case_fast
@pytest.mark.parametrize("arch", CNNS)
def test_channels_half_then_shrink_equals_masked_and_matches_torch_pruning(arch):
    import torch_pruning as tp

    model = randomize_bn(arch())
    wl = image_workload(model)
    masked = prune(model, StructuredPruneConfig(unit="channels", amount=0.5), wl)
    shrunk = prune(masked, ShrinkConfig(), wl)
    assert (_out(masked, wl) - _out(shrunk, wl)).abs().max() <= 1e-5
    assert _out(shrunk, wl).shape == _out(model, wl).shape
    assert not any(k.endswith(("_mask", "_orig")) for k in shrunk.state_dict())
    # the oracle: Torch-Pruning's own MetaPruner at the same ratio on the same model (classifier kept)
    ref = randomize_bn(arch())
    ref.load_state_dict(model.state_dict())
    out_layer = [m for m in ref.modules() if isinstance(m, nn.Linear)][-1]
    pruner = tp.pruner.MetaPruner(ref, wl.test.x[:2], importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=0.5, ignored_layers=[out_layer],
                                  root_module_types=[nn.Conv2d])
    pruner.step()
    ours, theirs = _params(shrunk) / _params(model), _params(ref) / _params(model)
    assert ours < 0.6 and abs(ours - theirs) <= 0.1 * theirs, (ours, theirs)


def test_residual_stream_is_one_group_removed_from_every_conv_adding_into_it():
    model = randomize_bn(res_cnn())
    g = build_graph(model, torch.randn(2, 1, 8, 8))
    stream = g.group_of("layer1.conv2")
    assert stream is g.group_of("stem.0") and set(stream.producers) == {"stem.0", "layer1.conv2"}
    wl = image_workload(model)
    shrunk = prune(prune(model, StructuredPruneConfig(unit="channels", amount=0.5), wl), ShrinkConfig(), wl)
    assert shrunk.stem[0].out_channels == shrunk.layer1.conv2.out_channels == shrunk.layer1.bn2.num_features == 8
    assert shrunk.layer2.shortcut[0].in_channels == shrunk.layer2.conv1.in_channels == 8
    # ignoring one conv of the stream leaves the whole stream alone
    kept = prune(model, StructuredPruneConfig(unit="channels", amount=0.5, ignore=["layer1.conv2"]), wl)
    assert not hasattr(kept.stem[0], "weight_mask") and hasattr(kept.layer1.conv1, "weight_mask")


@pytest.mark.slow
def test_depthwise_groups_flatten_concat_and_squeeze_excite_shapes():
    wl = image_workload(randomize_bn(DepthwiseCNN()))
    s = prune(prune(wl.model, StructuredPruneConfig(unit="channels", amount=0.5), wl), ShrinkConfig(), wl)
    dw = s.blocks[0][0]  # the first depthwise conv
    assert dw.groups == dw.in_channels == dw.out_channels == 8 and s.stem[0].out_channels == 8
    wl = image_workload(randomize_bn(GroupedCNN()))
    s = prune(prune(wl.model, StructuredPruneConfig(unit="channels", amount=0.5), wl), ShrinkConfig(), wl)
    assert (s.c1.out_channels, s.g.in_channels, s.g.out_channels, s.g.groups, s.c3.in_channels) == (16, 16, 16, 4, 16)
    wl = image_workload(FlattenCNN())
    s = prune(prune(wl.model, StructuredPruneConfig(unit="channels", amount=0.5), wl), ShrinkConfig(), wl)
    assert s.conv2.out_channels == 8 and s.fc1.in_features == 8 * 16
    wl = image_workload(randomize_bn(dense_cnn()))
    s = prune(prune(wl.model, StructuredPruneConfig(unit="channels", amount=0.5), wl), ShrinkConfig(), wl)
    assert (s.stem.out_channels, s.block[0].conv.out_channels, s.block[1].conv.out_channels) == (8, 4, 4)
    assert s.block[1].bn.num_features == 12 and s.transition[2].in_channels == 16
    wl = image_workload(randomize_bn(SECNN()))
    s = prune(prune(wl.model, StructuredPruneConfig(unit="channels", amount=0.5), wl), ShrinkConfig(), wl)
    assert s.conv1.out_channels == s.se1.expand.out_channels == s.se1.reduce.in_channels == 8
    assert s.se1.reduce.out_channels == 2


@pytest.mark.slow
def test_group_importance_is_torch_prunings_and_lowest_groups_go_first():
    import torch_pruning as tp

    model = randomize_bn(res_cnn())
    g = build_graph(model, torch.randn(2, 1, 8, 8)).group_of("layer2.conv1")
    ours = group_scores(g, "l2")
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(2, 1, 8, 8))
    grp = dg.get_pruning_group(model.layer2.conv1, tp.prune_conv_out_channels, list(range(32)))
    theirs = tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)(grp)
    assert torch.allclose(ours, theirs)
    wl = image_workload(model)
    masked = prune(model, StructuredPruneConfig(unit="channels", amount=0.25, importance="l2",
                                                          targets=["layer2.conv1"]), wl)
    gone = masked.layer2.conv1.weight.reshape(32, -1).abs().sum(1) == 0
    assert int(gone.sum()) == 8 and ours[gone].max() <= ours[~gone].min()
    assert torch.all(masked.layer2.bn1.weight[gone] == 0) and torch.all(masked.layer2.bn1.bias[gone] == 0)


@pytest.mark.slow
def test_multihead_attention_heads_and_ffn_neurons_prune_and_shrink():
    torch.manual_seed(0)
    wl = image_workload(TinyTransformer())
    masked = prune(wl.model, StructuredPruneConfig(unit="heads", amount=0.5), wl)
    masked = prune(masked, StructuredPruneConfig(unit="neurons", amount=0.5), wl)
    shrunk = prune(masked, ShrinkConfig(), wl)
    assert (_out(masked, wl) - _out(shrunk, wl)).abs().max() <= 1e-5
    for layer in shrunk.encoder.layers:
        assert layer.self_attn.num_heads == 2 and layer.self_attn.in_proj_weight.shape == (3 * 2 * 8, 32)
        assert layer.self_attn.out_proj.weight.shape == (32, 16) and layer.linear1.out_features == 32
    # the model still runs with a padding mask and in training mode
    with torch.no_grad():
        kpm = torch.zeros(2, 8, dtype=torch.bool)
        kpm[0, -2:] = True
        h = shrunk.embed(wl.test.x[:2].reshape(2, 8, 8))
        a = shrunk.encoder(h, src_key_padding_mask=kpm)
        b = masked.encoder(masked.embed(wl.test.x[:2].reshape(2, 8, 8)), src_key_padding_mask=kpm)
    assert (a - b).abs().max() <= 1e-5


@pytest.mark.slow
def test_hugging_face_bert_heads_and_ffn_neurons_prune_and_shrink():
    pytest.importorskip("transformers")
    model = tiny_bert()
    wl = bert_workload(model)
    masked = prune(model, StructuredPruneConfig(unit="heads", amount=0.5), wl)
    masked = prune(masked, StructuredPruneConfig(unit="neurons", amount=0.5), wl)
    shrunk = prune(masked, ShrinkConfig(), wl)
    assert (_out(masked, wl) - _out(shrunk, wl)).abs().max() <= 1e-5
    att = shrunk.bert.encoder.layer[0].attention
    assert att.self.query.weight.shape == (16, 32) and att.output.dense.weight.shape == (32, 16)
    assert att.self.num_attention_heads == 2 and att.self.all_head_size == 16
    assert shrunk.bert.encoder.layer[0].intermediate.dense.out_features == 32
    assert _params(shrunk) < _params(model)


def test_hand_written_attention_heads_found_without_names():
    """The same hand-written attention with other attribute names: heads are found from the traced SDPA call."""

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads_count, self.width = 4, 8
            self.to_qkv, self.out = nn.Linear(16, 96), nn.Linear(32, 16)

        def forward(self, x):
            b, t, _ = x.shape
            q, k, v = self.to_qkv(x).reshape(b, t, 3, self.heads_count, self.width).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, d)
            return self.out(y.transpose(1, 2).reshape(b, t, self.heads_count * self.width))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.attn, self.fc = nn.Linear(8, 16), Attn(), nn.Linear(16, 10)

        def forward(self, x):
            h = self.inp(x.reshape(x.shape[0], 8, 8))
            return self.fc((h + self.attn(h)).mean(1))

    torch.manual_seed(0)
    wl = image_workload(Net())
    shrunk = prune(prune(wl.model, StructuredPruneConfig(unit="heads", amount=0.25), wl), ShrinkConfig(), wl)
    assert shrunk.attn.heads_count == 3 and shrunk.attn.to_qkv.out_features == 72 and shrunk.attn.out.in_features == 24
    masked = prune(wl.model, StructuredPruneConfig(unit="heads", amount=0.25), wl)
    assert (_out(masked, wl) - _out(shrunk, wl)).abs().max() <= 1e-5


@pytest.mark.parametrize("arch, cfg, needle", [
    (GRUNet, {"unit": "neurons", "targets": ["inp"]}, "targets: the neurons of 'inp' cannot be removed: they feed GRU 'gru'"),
    (GRUNet, {"unit": "neurons", "targets": ["gru"]}, "targets: 'gru' is a GRU: its hidden size is not pruned"),
    (GRUNet, {"unit": "neurons"}, "unit: this model has no prunable neurons"),
    (TinyTransformer, {"unit": "neurons", "targets": ["embed"]}, "LayerNorm 'encoder.layers.0.norm1' normalises them"),
    (SigmoidCNN, {"unit": "channels", "targets": ["a"]}, "reach 'b' as non-zero values"),
    (res_cnn, {"unit": "neurons", "targets": ["fc"], "include_classifier": True}, "targets: 'fc' is the classifier"),
    (res_cnn, {"unit": "heads"}, "unit: 'heads' needs attention layers"),
])
def test_what_cannot_be_pruned_is_named_with_the_reason(arch, cfg, needle):
    model = arch().eval()
    with pytest.raises(CompressionError) as e:
        prune(model, StructuredPruneConfig(**cfg), image_workload(model))
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_model_output_group_is_refused_with_its_reason():
    g = build_graph(res_cnn().eval(), torch.randn(2, 1, 8, 8))
    assert g.refused("neurons") == {"fc": "its outputs are the model's output"}


def test_blocks_found_by_tracing_on_foreign_models():
    wl = image_workload(randomize_bn(res_cnn()))
    out = prune(wl.model, LayerPruneConfig(names=["layer1"]), wl)
    assert isinstance(out.layer1, nn.Identity) and _out(out, wl).shape == (32, 10)
    with pytest.raises(CompressionError, match=r"names: 'layer2' is not a removable block \(its output shape"):
        prune(wl.model, LayerPruneConfig(names=["layer2"]), wl)
    torch.manual_seed(0)
    wl = image_workload(TinyTransformer())
    out = prune(wl.model, LayerPruneConfig(names=["encoder.layers.1"]), wl)
    assert len(out.encoder.layers) == 1 and _out(out, wl).shape == (32, 10)
    model = tiny_bert()
    wl = bert_workload(model)
    out = prune(model, LayerPruneConfig(names=["bert.encoder.layer.0"]), wl)
    assert len(out.bert.encoder.layer) == 1 and _out(out, wl).shape == (16, 4)
