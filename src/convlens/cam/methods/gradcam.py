"""Grad-CAM: channel weights are the spatial mean of the gradients.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017, eq. 1-2:
``alpha_k = 1/Z sum_ij dy/dA_k^ij``, ``L = ReLU(sum_k alpha_k A_k)``.
"""

from __future__ import annotations

import torch

from ..core import GradientCam, register


@register
class GradCAM(GradientCam):
    """Grad-CAM (Selvaraju et al. 2017): weights = spatial mean of the gradients."""

    name = "gradcam"
    title = "Grad-CAM"
    reference = "Selvaraju et al., ICCV 2017, arXiv:1610.02391"

    def gradient_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.mean(dim=(2, 3))
