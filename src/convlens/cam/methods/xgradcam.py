"""XGrad-CAM: gradients weighted by the normalized activations.

Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
BMVC 2020, eq. 9: ``w_k = sum_ij (A_k^ij / sum_ab A_k^ab) dy/dA_k^ij``,
``L = ReLU(sum_k w_k A_k)``. A channel whose activations sum to 0 gets weight 0.
"""

from __future__ import annotations

import torch

from ..core import GradientCam, register


@register
class XGradCAM(GradientCam):
    """XGrad-CAM (Fu et al. 2020)."""

    name = "xgradcam"
    title = "XGrad-CAM"
    reference = "Fu et al., BMVC 2020, arXiv:2008.02312"

    def gradient_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        total = activations.sum(dim=(2, 3))
        weighted = (activations * gradients).sum(dim=(2, 3))
        safe = torch.where(total != 0, total, torch.ones_like(total))
        return torch.where(total != 0, weighted / safe, torch.zeros_like(total))
