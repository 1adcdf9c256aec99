"""A small seed-style convnet trained from scratch on scikit-learn's bundled digits (32x32 RGB).

``tools/train_digits.py`` trains it; its weights (140 kB) ship with convlens. It is the model
of the scan demo (``python -m convlens.scan.demo``); ``load_model("digits_convnet")`` loads it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

DIGITS_MODEL = "digits_convnet"
DIGITS_WEIGHTS = Path(__file__).with_name("data") / "digits_convnet.pt"
DIGITS_CLASSES = [str(d) for d in range(10)]
DIGITS_SIZE = 32


def digits_network(pretrained: bool = False) -> nn.Sequential:
    """Conv → pool → conv → pool → conv → dense, as the seed's cats-vs-dogs model (smaller)."""
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3), nn.ReLU(),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 4 * 4, 10),
    )
    if pretrained:
        net.load_state_dict(torch.load(DIGITS_WEIGHTS, map_location="cpu", weights_only=True))
    return net.eval()
