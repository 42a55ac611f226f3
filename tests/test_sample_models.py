import json

import pytest
import torch

import sample_models
from compression_core import accuracy
from compression_core.errors import CompressionError
from compression_core.workload import Workload, resolve_workload
from sample_models.train import train_one


@pytest.mark.parametrize("name", sample_models.MODEL_NAMES)
def test_shipped_model_meets_its_accuracy_and_metadata_is_true(name):
    wl = sample_models.load(name)
    acc = accuracy(wl.model, wl.test.x, wl.test.y)
    assert acc >= wl.info["min_accuracy"]
    assert acc == pytest.approx(wl.info["trained"]["test_accuracy"], abs=1e-9)
    assert tuple(wl.test.x.shape[1:]) == tuple(wl.info["input_shape"])
    assert wl.classifier == wl.info["classifier"]
    assert wl.info["classifier"] in dict(wl.model.named_modules())


@pytest.mark.parametrize("dataset_model", ["digits-mlp", "mnist-lenet300"])
def test_splits_are_fixed_disjoint_and_stratified(dataset_model):
    d = sample_models.data(dataset_model)
    n = len(d.train) + len(d.calib) + len(d.test)
    assert len(d.test) == pytest.approx(0.2 * n, abs=2)
    assert len(d.calib) == pytest.approx(0.1 * n, abs=2)
    rows = lambda s: {tuple(r.tolist()) for r in s.x.reshape(len(s), -1)[:200]}  # noqa: E731
    assert not rows(d.test) & rows(d.calib)
    for split in (d.train, d.calib, d.test):
        assert set(split.y.tolist()) == set(range(10))


def test_weights_are_small():
    total = sum(p.stat().st_size for p in sample_models.WEIGHTS_DIR.glob("*.pt"))
    assert total < 5 * 1024 * 1024


def test_unknown_model_is_a_one_line_error_naming_valid_names():
    with pytest.raises(CompressionError) as e:
        sample_models.load("resnet-9000")
    msg = str(e.value)
    assert "\n" not in msg and "digits-cnn" in msg and "resnet-9000" in msg


def test_load_gives_independent_copies():
    a, b = sample_models.load("digits-mlp"), sample_models.load("digits-mlp")
    with torch.no_grad():
        a.model.fc1.weight.zero_()
    assert b.model.fc1.weight.abs().sum() > 0


def test_a_sample_is_a_workload_with_its_metadata_in_info():
    wl = sample_models.load("digits-cnn")
    assert isinstance(wl, Workload) and wl.name == "digits-cnn" and wl.reference is None
    i = sample_models.info("digits-cnn")
    assert (wl.classifier, wl.lr, wl.seed, wl.build, wl.input_shape) == (i.classifier, i.train.lr, i.train.seed,
                                                                          i.build, i.input_shape)
    assert wl.info["min_accuracy"] == i.min_accuracy and wl.info["train_settings"]["epochs"] == i.train.epochs
    assert wl.info["trained"] == sample_models.trained_metadata("digits-cnn")
    shared = resolve_workload("digits-cnn")  # built once per process, its reference set; load() never shares it
    assert shared.reference == "digits-cnn" and shared.model is not wl.model
    assert dict(shared.info) == dict(wl.info)


@pytest.mark.slow
def test_training_is_deterministic_and_reproduces_the_shipped_model():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        m1 = train_one("digits-mlp", write=False, verbose=False)
        m2 = train_one("digits-mlp", write=False, verbose=False)
    finally:
        torch.set_num_threads(old)
    assert m1["test_accuracy"] == m2["test_accuracy"]
    shipped = json.loads(sample_models.metadata_path("digits-mlp").read_text())
    assert m1["test_accuracy"] == shipped["test_accuracy"]


@pytest.mark.slow
def test_retraining_writes_identical_metadata(tmp_path, monkeypatch):
    """`python -m sample_models.train` leaves git clean: the JSON holds only what a rerun reproduces exactly."""
    import sample_models.train as train

    monkeypatch.setattr(train, "weights_path", lambda name: tmp_path / f"{name}.pt")
    monkeypatch.setattr(train, "metadata_path", lambda name: tmp_path / f"{name}.json")
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)  # as `python -m sample_models.train` runs
    try:
        train.train_one("digits-mlp", write=True)
    finally:
        torch.set_num_threads(old)
    shipped = (sample_models.metadata_path("digits-mlp")).read_text()
    assert (tmp_path / "digits-mlp.json").read_text() == shipped
