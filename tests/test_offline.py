"""Nothing may reach for the network: loading, measuring and training run with socket creation blocked."""

import socket

import pytest

import sample_models
from compression_core import FineTuneConfig, fine_tune, measure
from conftest import NetworkBlocked


def test_guard_really_blocks_the_network():
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("93.184.216.34", 80), timeout=1)


def test_load_measure_train_with_sockets_blocked(no_sockets):
    with pytest.raises(NetworkBlocked):
        socket.socket()
    wl = sample_models.load("digits-cnn")
    s = measure(wl.model, wl, name="digits-cnn", min_run_time=0.02)
    assert s.accuracy >= 0.97
    tuned = fine_tune(wl.model, wl.train.x[:256], wl.train.y[:256], FineTuneConfig(epochs=1))
    assert tuned is not wl.model
