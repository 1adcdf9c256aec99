"""Grad-CAM++: pixel-wise weighted positive gradients.

Chattopadhay et al., "Grad-CAM++: Improved Visual Explanations for Deep Convolutional Networks",
WACV 2018, eq. 19 (with the exponential of the score, ``Y = exp(S)``, so that the 2nd and 3rd
derivatives are powers of the 1st):
``alpha_k^ij = g^2 / (2 g^2 + sum_ab A_k^ab g^3)`` (0 where g = 0),
``w_k = sum_ij alpha_k^ij ReLU(dY/dA_k^ij)``, ``L = ReLU(sum_k w_k A_k)``, with ``g = dS/dA``.
``dY/dA = exp(S) g``: the factor ``exp(S)`` is one positive number per image, so it is left out
of the weights (it cancels in the normalized heatmap and would overflow the raw map).

Only positions with ``g > 0`` contribute, and there ``alpha g = g / (2 + T_k g)`` with
``T_k = sum_ab A_k^ab``: that is what is computed (four passes over the gradients instead of
ten). Where ``2 + T_k g = 0`` (possible only for a channel whose activations sum below zero)
alpha is undefined and the position contributes 0.
"""

from __future__ import annotations

import torch

from ..core import GradientCam, register


@register
class GradCAMPlusPlus(GradientCam):
    """Grad-CAM++ (Chattopadhay et al. 2018)."""

    name = "gradcam++"
    title = "Grad-CAM++"
    aliases = ("gradcampp", "gradcamplusplus")
    reference = "Chattopadhay et al., WACV 2018, arXiv:1710.11063"

    def gradient_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        positive = gradients.clamp_min(0)
        total = activations.sum(dim=(2, 3), keepdim=True)
        denominator = 2 + total * positive
        if bool((total < 0).any()):  # 2 + T g can only vanish where T < 0
            denominator.masked_fill_(denominator == 0, torch.inf)
        return (positive / denominator).sum(dim=(2, 3))
