"""Raw maps → heatmaps: ReLU, bilinear upsampling on the device, per-map normalization."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = ["normalize_maps", "upsample"]


def _max_normalize(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each map divided by its max, in place (an all-zero map stays 0), and the (R,) maxima."""
    peak = maps.amax(dim=(1, 2), keepdim=True)
    return maps.div_(peak.clamp_min(torch.finfo(maps.dtype).tiny)), peak[:, 0, 0]


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(R, h, w) → (R, H, W), bilinear (align_corners=False), on the maps' device."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def normalize_maps(
    raws: Sequence[torch.Tensor], size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw maps of one or more layers → (R, H, W) heatmaps in [0, 1] and an (R,) empty flag.

    Each map: ReLU, bilinear upsampling to ``size``, division by its per-row max (an all-zero map
    stays zero). Several layers: the mean of their normalized maps, normalized again.
    """
    normalized = [_max_normalize(upsample(raw.float().clamp_min(0), size)) for raw in raws]
    heat, peak = normalized[0]
    if len(normalized) > 1:
        heat, peak = _max_normalize(torch.stack([m for m, _ in normalized]).mean(dim=0))
    return heat, peak <= 0
