"""My own model as a workload: a small residual CNN on scikit-learn's digits, trained on first use, then cached."""
import torch
from sklearn.datasets import load_digits
from torch import nn
from compression_core import FineTuneConfig, Workload, fine_tune


class ResidualCNN(nn.Module):
    def __init__(self, c: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU())  # (B, c, 8, 8)
        self.block = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                   nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))
        self.fc = nn.Linear(c, 10)
    def forward(self, x):
        x = self.stem(x)
        return self.fc(torch.relu(x + self.block(x)).mean((2, 3)))  # residual add, global average pool -> (B, 10)


def workload() -> Workload:
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16, torch.tensor(y)  # (1797, 1, 8, 8)
    torch.manual_seed(0)
    model, weights = ResidualCNN(), __file__.removesuffix(".py") + ".pt"
    try:
        model.load_state_dict(torch.load(weights, weights_only=True))
    except FileNotFoundError:  # first use: train a few seconds; every later command loads the same weights
        model = fine_tune(model, x[:1400], y[:1400], FineTuneConfig(epochs=15, lr=1e-2))
        torch.save(model.state_dict(), weights)
    return Workload(name="my-resnet", model=model.eval(), train=(x[:1400], y[:1400]), test=(x[1400:], y[1400:]))
