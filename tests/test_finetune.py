import torch
from torch.nn.utils import prune

import sample_models
from compression_core import FineTuneConfig, accuracy, fine_tune, layer_stats


def test_fine_tune_keeps_masks_and_does_not_touch_input():
    wl = sample_models.load("digits-mlp")
    prune.l1_unstructured(wl.model.fc1, "weight", amount=0.8)
    mask = wl.model.fc1.weight_mask.clone()
    orig = wl.model.fc1.weight_orig.clone()
    cfg = FineTuneConfig(epochs=2, lr=1e-3, weight_decay=0.01)
    tuned = fine_tune(wl.model, wl.train.x, wl.train.y, cfg)
    assert torch.equal(wl.model.fc1.weight_orig, orig)  # input untouched
    assert torch.equal(tuned.fc1.weight_mask, mask)
    assert torch.all(tuned.fc1.weight[mask == 0] == 0)
    assert not torch.equal(tuned.fc1.weight_orig * mask, orig * mask)  # it did train
    assert {r.name: r.nonzero for r in layer_stats(tuned)}["fc1"] <= int(mask.sum()) + 128


def test_fine_tune_is_deterministic_and_reports_progress():
    wl = sample_models.load("digits-mlp")
    seen = []
    cfg = FineTuneConfig(epochs=2, lr=1e-3, seed=3)
    a = fine_tune(wl.model, wl.train.x, wl.train.y, cfg, progress=lambda f, m: seen.append(f))
    b = fine_tune(wl.model, wl.train.x, wl.train.y, cfg)
    assert seen == [0.5, 1.0]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert accuracy(a, wl.test.x, wl.test.y) > 0.9
