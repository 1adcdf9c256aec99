"""Grad-CAM++: pixel-wise weighted positive gradients.

Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks",
WACV 2018, eq. 19 (with the exponential of the score, ``Y = exp(S)``, so that the 2nd and 3rd
derivatives are powers of the 1st):
``alpha_k^ij = g^2 / (2 g^2 + sum_ab A_k^ab g^3)`` (0 where g = 0),
``w_k = sum_ij alpha_k^ij ReLU(dY/dA_k^ij)``, ``L = ReLU(sum_k w_k A_k)``, with ``g = dS/dA``.

``dY/dA = exp(S) g``: the factor ``exp(S)`` is one positive number per image, so it is left out
of the weights (it cancels in the normalized heatmap and would overflow the raw map).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .core import CamContext, WeightedCam

if TYPE_CHECKING:
    from ..models.base import LayerInfo


class GradCAMPlusPlus(WeightedCam):
    """Grad-CAM++ (Chattopadhay et al. 2018)."""

    name = "gradcam++"
    title = "Grad-CAM++"
    reference = "Chattopadhay et al., WACV 2018, arXiv:1710.11063"
    needs_gradients = True

    def channel_weights(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        assert gradients is not None
        g2 = gradients.square()
        g3 = g2 * gradients
        total = activations.sum(dim=(2, 3), keepdim=True)
        denominator = 2 * g2 + total * g3
        safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
        alpha = torch.where(gradients != 0, g2 / safe, torch.zeros_like(g2))
        return (alpha * gradients.clamp_min(0)).sum(dim=(2, 3))
