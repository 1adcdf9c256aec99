"""HiResCAM: the element-wise product of gradients and activations, summed over channels.

Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional
neural networks", arXiv:2011.08891 (2020), eq. 4: ``M = sum_k dy/dA_k (.) A_k``. For a head
that is global average pooling + linear, its map is exactly the class's own score map.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .core import CamContext, CamMethod

if TYPE_CHECKING:
    from ..models.base import LayerInfo


class HiResCAM(CamMethod):
    """HiResCAM (Draelos & Carin 2020)."""

    name = "hirescam"
    title = "HiResCAM"
    reference = "Draelos & Carin, arXiv:2011.08891"
    needs_gradients = True

    def layer_map(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        assert gradients is not None
        return (gradients * activations).sum(dim=1)
