"""LayerCAM: every position's activation weighted by its own positive gradient.

Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
IEEE TIP 2021, eq. 5-6: ``M = ReLU(sum_k ReLU(dy/dA_k^ij) A_k^ij)``.
"""

from __future__ import annotations

import torch

from ..core import GradientCam, register


@register
class LayerCAM(GradientCam):
    """LayerCAM (Jiang et al. 2021); good on shallow layers (try several, fused)."""

    name = "layercam"
    title = "LayerCAM"
    reference = "Jiang et al., IEEE TIP 2021, doi:10.1109/TIP.2021.3089943"

    def gradient_weights(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return gradients.clamp_min(0)
