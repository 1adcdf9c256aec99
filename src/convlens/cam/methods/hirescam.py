"""HiResCAM: the element-wise product of gradients and activations, summed over channels.

Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
neural networks", arXiv:2011.08891 (2020), eq. 4: ``M = sum_k dy/dA_k (.) A_k``. For a head
that is global average pooling + linear, its map is exactly the class's own score map.
"""

from __future__ import annotations

import torch

from ..core import GradientCam, register


@register
class HiResCAM(GradientCam):
    """HiResCAM (Draelos & Carin 2020)."""

    name = "hirescam"
    title = "HiResCAM"
    reference = "Draelos & Carin, arXiv:2011.08891"

    def gradient_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients
