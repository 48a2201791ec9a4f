"""Small fast nets: the offline quickstart's CNN (8x8 digits) and a tiny MLP for tests."""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """conv-BN-ReLU x3 (one stride-2) + global pool + linear; 56.5k parameters at width 32.

    Small enough for a two-minute CPU run, but with everything HAM and the sparsifiers act on or must skip:
    conv weights (4-D), a linear weight (2-D), biases and BatchNorm parameters.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 8, width: int = 32):
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.features = nn.Sequential(block(in_chans, width, 1), block(width, 2 * width, 2),
                                      block(2 * width, 2 * width, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 8, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_chans * img_size * img_size, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
