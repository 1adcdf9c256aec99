"""Eigen-CAM: the activations projected on their first principal component (no gradients).

Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020,
eq. 6-7: with the (h*w, C) activation matrix ``O = U S V^T``, the map is ``O v_1`` (v_1: the first
right-singular vector). A singular vector's sign is arbitrary; it is chosen so that the map
correlates positively with the mean activation over channels. The map does not depend on the
target class. ``center=True`` subtracts each channel's mean first (PCA proper, as
pytorch-grad-cam does); the paper does not.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ...gradients import repeat_rows
from ..core import CamContext, CamMethod, register

if TYPE_CHECKING:
    from ...models import LayerInfo


@register
class EigenCAM(CamMethod):
    """Eigen-CAM (Muhammad & Yeasin 2020): class-agnostic first principal component."""

    name = "eigencam"
    title = "Eigen-CAM"
    reference = "Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299"

    def __init__(self, center: bool = False):
        self.center = center

    def layer_map(
        self, ctx: CamContext, info: LayerInfo, activations: torch.Tensor,
        gradients: torch.Tensor | None,
    ) -> torch.Tensor:
        k = ctx.plan.k
        a = activations[::k]  # one map per image: rows of an image share it
        n, c, h, w = a.shape
        matrix = a.reshape(n, c, h * w).transpose(1, 2)  # (N, hw, C)
        if self.center:
            matrix = matrix - matrix.mean(dim=1, keepdim=True)
        _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        projection = matrix @ vh[:, 0, :, None]  # (N, hw, 1)
        projection = projection[..., 0]
        mean = a.mean(dim=1).reshape(n, h * w)
        agreement = ((projection - projection.mean(1, keepdim=True))
                     * (mean - mean.mean(1, keepdim=True))).sum(dim=1)
        sign = torch.where(agreement < 0, -1.0, 1.0).to(projection.dtype)
        maps = (projection * sign[:, None]).reshape(n, h, w)
        return repeat_rows(maps, k)
