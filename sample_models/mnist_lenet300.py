"""LeNet-300-100 (LeCun et al. 1998): the fully connected 784-300-100-10 net used by Han et al. 2015."""

from .digits_mlp import DigitsMLP


class LeNet300(DigitsMLP):
    def __init__(self) -> None:
        super().__init__((784, 300, 100, 10))
