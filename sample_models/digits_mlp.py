"""MLP 64-128-64-10 for scikit-learn's 8x8 digits (flattened)."""

from collections import OrderedDict

from torch import nn


class DigitsMLP(nn.Sequential):
    def __init__(self, sizes: tuple[int, ...] = (64, 128, 64, 10)) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        for i in range(len(sizes) - 1):
            layers[f"fc{i + 1}"] = nn.Linear(sizes[i], sizes[i + 1])
            if i < len(sizes) - 2:
                layers[f"relu{i + 1}"] = nn.ReLU()
        super().__init__(layers)
