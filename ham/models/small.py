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


class MNISTCNN(nn.Module):
    """LeNet-5-style: conv3x3(16)-BN-ReLU-pool, conv3x3(32)-BN-ReLU-pool, linear 1568->64, linear 64->10
    (0.11M parameters, 94 % of them in the first linear layer, as in a ResNet most weights sit in a few layers)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 28, width: int = 16):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2))

        self.features = nn.Sequential(block(in_chans, width), block(width, 2 * width))
        side = img_size // 4
        self.fc1 = nn.Linear(2 * width * side * side, 64)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.fc1(torch.flatten(self.features(x), 1))))


class MLP(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 8, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_chans * img_size * img_size, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
