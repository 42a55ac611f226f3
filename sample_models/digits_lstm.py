"""LSTM for 8x8 digits read as a sequence: the 8 pixel rows are 8 time steps of 8 features each."""

import torch
from torch import nn


class DigitsLSTM(nn.Module):
    def __init__(self, rows: int = 8, hidden: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size=rows, hidden_size=hidden, batch_first=True)
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)  # x: (B, 8 rows, 8 pixels) -> (B, 8, hidden)
        return self.fc(out[:, -1])  # last step's state (B, hidden) -> (B, classes)
