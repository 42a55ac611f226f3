"""A 4.65 M parameter EfficientNet-Lite0-like CNN with explicit padding, as a workload (the issue-24 "slower" case).

Depthwise-separable inverted-residual blocks (expand 1x1, depthwise kxk, project 1x1; ReLU6; no squeeze-excite,
as in Lite0) with TensorFlow's "same" padding done by an ``nn.ZeroPad2d`` before every strided or kxk conv (the
way EfficientNet-Lite ports pad), so torch's static int8 puts a dequantize/quantize pair around each pad. Random
weights (seeded) with BatchNorm statistics set by a few forward passes over the inputs, so activations are well
scaled; the metric is agreement with the fp32 model's own top-1 (there are no labels). Random weights make int8's
answers drift more than a trained model's would (top-1 over 1000 near-equal scores): the latency is the point.

    compression-lab apply recipe.yaml      # model: examples/padded_cnn.py:workload
    python -m benchmarks.slower --slow-case
"""

from __future__ import annotations

import math
import os

import torch
from torch import nn

from compression_core import AGREEMENT, Workload

# (expand ratio, output channels, repeats, stride, kernel): EfficientNet-Lite0's stages
STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
          (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))


def same_pad(kernel: int, stride: int) -> nn.ZeroPad2d:
    """TensorFlow's 'same' padding for an even input size: (left, right, top, bottom), the extra pixel after."""
    total = max(kernel - stride, 0)
    a, b = total // 2, total - total // 2
    return nn.ZeroPad2d((a, b, a, b))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, stride: int, kernel: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU6()]
        layers += [same_pad(kernel, stride), nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False),
                   nn.BatchNorm2d(mid), nn.ReLU6(),
                   nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class PaddedLite(nn.Module):
    """EfficientNet-Lite0-like: stem 3x3/2 -> 16 blocks -> 1x1 conv to 1280 -> average pool -> Linear."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [same_pad(3, 2), nn.Conv2d(3, 32, 3, 2, bias=False), nn.BatchNorm2d(32),
                                   nn.ReLU6()]
        cin = 32
        for expand, cout, repeats, stride, kernel in STAGES:
            for i in range(repeats):
                layers.append(Block(cin, cout, expand, stride if i == 0 else 1, kernel))
                cin = cout
        layers += [nn.Conv2d(cin, 1280, 1, bias=False), nn.BatchNorm2d(1280), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1280, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, classes)
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def images(n: int, size: int, seed: int) -> torch.Tensor:
    """Smooth random images (low-frequency noise, like photos rather than white noise), (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, size // 16, size // 16, generator=g)
    return nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False) * 2 - 1


def workload(size: int | None = None) -> Workload:
    """The workload: 32 test images, 16 calibration images (size x size, default 160 or $PADDED_CNN_SIZE;
    ImageNet's 224 takes twice as long), agreement with the fp32 model's top-1 (random weights: no labels)."""
    size = size or int(os.environ.get("PADDED_CNN_SIZE", "160"))
    torch.manual_seed(0)
    model = PaddedLite()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1 / math.sqrt(m.in_features))
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative: the statistics of the batches below
    calib, test = images(16, size, 1), images(32, size, 2)
    model.train()
    with torch.no_grad():
        for i in range(0, 16, 8):
            model(calib[i:i + 8])
    model.eval()
    return Workload(name="padded-lite", model=model, test=(test, None), calib=(calib, None), metric=AGREEMENT,
                    classifier="fc",
                    description=f"EfficientNet-Lite0-like CNN with explicit ZeroPad2d padding, {size}x{size}, random "
                                "weights")
