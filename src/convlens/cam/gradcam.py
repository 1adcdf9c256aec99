"""Grad-CAM: channel weights are the spatial mean of the gradients.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017, eq. 1-2:
``alpha_k = 1/Z sum_ij dy/dA_k^ij``, ``L = ReLU(sum_k alpha_k A_k)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .core import CamContext, WeightedCam

if TYPE_CHECKING:
    from ..models.base import LayerInfo


class GradCAM(WeightedCam):
    """Grad-CAM (Selvaraju et al. 2017): weights = spatial mean of the gradients."""

    name = "gradcam"
    title = "Grad-CAM"
    reference = "Selvaraju et al., ICCV 2017, arXiv:1610.02391"
    needs_gradients = True

    def channel_weights(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        assert gradients is not None
        return gradients.mean(dim=(2, 3))
