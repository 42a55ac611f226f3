"""LeNet-5-style CNN for 28x28 MNIST (LeCun et al. 1998), with BatchNorm after each convolution."""

from collections import OrderedDict

from torch import nn


class MnistCNN(nn.Sequential):
    def __init__(self, c1: int = 6, c2: int = 16, classes: int = 10) -> None:
        super().__init__(
            OrderedDict(
                conv1=nn.Conv2d(1, c1, 5, padding=2),  # (B, 6, 28, 28)
                bn1=nn.BatchNorm2d(c1),
                relu1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),  # (B, 6, 14, 14)
                conv2=nn.Conv2d(c1, c2, 5),  # (B, 16, 10, 10)
                bn2=nn.BatchNorm2d(c2),
                relu2=nn.ReLU(),
                pool2=nn.MaxPool2d(2),  # (B, 16, 5, 5)
                flatten=nn.Flatten(),  # (B, 400)
                fc1=nn.Linear(c2 * 25, 120),
                relu3=nn.ReLU(),
                fc2=nn.Linear(120, 84),
                relu4=nn.ReLU(),
                fc3=nn.Linear(84, classes),
            )
        )
