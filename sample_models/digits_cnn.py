"""Small CNN with BatchNorm for 8x8 digits: two conv-BN-ReLU blocks, a max-pool and two Linear layers."""

from collections import OrderedDict

from torch import nn


class DigitsCNN(nn.Sequential):
    def __init__(self, c1: int = 16, c2: int = 32, hidden: int = 64, classes: int = 10) -> None:
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(1, c1, 3, padding=1),  # (B, c1, 8, 8)
                bn1=nn.BatchNorm2d(c1),
                relu1=nn.ReLU(),
                conv2=nn.Conv2d(c1, c2, 3, padding=1),  # (B, c2, 8, 8)
                bn2=nn.BatchNorm2d(c2),
                relu2=nn.ReLU(),
                pool=nn.MaxPool2d(2),  # (B, c2, 4, 4)
                flatten=nn.Flatten(),  # (B, c2 * 16)
                fc1=nn.Linear(c2 * 16, hidden),
                relu3=nn.ReLU(),
                fc2=nn.Linear(hidden, classes),
            )
        )
