"""Layer pruning (whole blocks) and lottery tickets (iterative magnitude pruning with rewinding)."""

import pytest
import torch
from pydantic import ValidationError

import sample_models
from compression_core import CompressionError, StepContext, accuracy, apply_step
from compression_core.prune import LayerPruneConfig, LotteryTicketConfig, block_importance, lottery_ticket, prune


@pytest.fixture(scope="module")
def vit():
    return sample_models.load("digits-vit")


@pytest.mark.slow
def test_remove_blocks_by_name_and_by_importance(vit):
    by_name = prune(vit.model, LayerPruneConfig(names=["blocks.0"]), vit)
    assert len(by_name.blocks) == 1 and len(vit.model.blocks) == 2  # input unchanged
    assert torch.equal(by_name.blocks[0].attn.qkv.weight, vit.model.blocks[1].attn.qkv.weight)
    drops = block_importance(vit.model, vit.calib.x, vit.calib.y)
    assert set(drops) == {"blocks.0", "blocks.1"}
    least = min(drops, key=drops.get)
    msgs = []
    chosen = prune(vit.model, LayerPruneConfig(count=1), vit, progress=lambda f, m: msgs.append(m))
    expected = prune(vit.model, LayerPruneConfig(names=[least]), vit)
    x = vit.calib.x
    assert torch.equal(chosen(x), expected(x))
    base = accuracy(vit.model, x, vit.calib.y)
    assert accuracy(chosen, x, vit.calib.y) == pytest.approx(base - drops[least])
    assert any("removed" in m for m in msgs)


@pytest.mark.parametrize("name", ["digits-mlp", "digits-cnn"])
def test_models_without_same_shape_blocks_get_a_clear_error(name):
    wl = sample_models.load(name)
    with pytest.raises(CompressionError, match="no removable blocks: only blocks whose input and output shapes match"):
        prune(wl.model, LayerPruneConfig(count=1), wl)


def test_bad_layer_configs(vit):
    with pytest.raises(CompressionError, match="names: 'blocks.5' is not a removable block"):
        prune(vit.model, LayerPruneConfig(names=["blocks.5"]), vit)
    with pytest.raises(CompressionError, match="count: must be < 2"):
        prune(vit.model, LayerPruneConfig(count=2), vit)
    with pytest.raises(ValidationError):
        LayerPruneConfig(names=["blocks.0"], count=1)


@pytest.mark.slow
def test_lottery_ticket_rounds_masks_and_rewinding():
    wl = sample_models.load("digits-mlp")
    cfg = LotteryTicketConfig(rounds=2, epochs=1, rate=0.5)
    before = {k: v.clone() for k, v in wl.model.state_dict().items()}
    ticket, rounds = lottery_ticket(wl.model, cfg, StepContext(data=wl))
    assert [r.round for r in rounds] == [0, 1, 2]
    assert [r.weights_left for r in rounds] == pytest.approx([1.0, 0.5, 0.25], abs=1e-3)
    assert all(r.random_accuracy is None for r in rounds)
    assert int(ticket.fc1.weight_mask.sum()) == 64 * 128 // 4 and not hasattr(ticket.fc3, "weight_mask")
    assert all(torch.equal(v, wl.model.state_dict()[k]) for k, v in before.items())
    # the step is deterministic, and its replay rebuilds the same structure without training
    again = apply_step(wl.model, cfg, StepContext(data=wl))
    assert torch.equal(again.fc1.weight_mask, ticket.fc1.weight_mask)
    replay = apply_step(sample_models.build("digits-mlp"), cfg, StepContext(data=wl, replay=True))
    assert {k: v.shape for k, v in replay.state_dict().items()} == {k: v.shape for k, v in ticket.state_dict().items()}


@pytest.mark.slow
def test_lottery_ticket_random_control_and_late_rewinding():
    wl = sample_models.load("digits-mlp")
    ctx = StepContext(data=wl)
    _, rounds = lottery_ticket(wl.model, LotteryTicketConfig(rounds=1, epochs=1, reinit="random"), ctx)
    assert all(r.random_accuracy is not None for r in rounds)
    late, _ = lottery_ticket(wl.model, LotteryTicketConfig(rounds=1, epochs=1, rewind=5), ctx)
    early, _ = lottery_ticket(wl.model, LotteryTicketConfig(rounds=1, epochs=1), ctx)
    assert not torch.equal(late.fc1.weight_orig, early.fc1.weight_orig)
    with pytest.raises(CompressionError, match="rewind: iteration 10000 is past"):
        lottery_ticket(wl.model, LotteryTicketConfig(rounds=1, epochs=1, rewind=10000), ctx)
    with pytest.raises(ValidationError):
        LotteryTicketConfig(rate=1.0)
