"""LayerCAM: every position's activation weighted by its own positive gradient.

Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization",
IEEE TIP 2021, eq. 5-6: ``M = ReLU(sum_k ReLU(dy/dA_k^ij) A_k^ij)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .core import CamContext, CamMethod

if TYPE_CHECKING:
    from ..models.base import LayerInfo


class LayerCAM(CamMethod):
    """LayerCAM (Jiang et al. 2021); good on shallow layers (try several, fused)."""

    name = "layercam"
    title = "LayerCAM"
    reference = "Jiang et al., IEEE TIP 2021, doi:10.1109/TIP.2021.3089943"
    needs_gradients = True

    def layer_map(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        assert gradients is not None
        return (gradients.clamp_min(0) * activations).sum(dim=1)
