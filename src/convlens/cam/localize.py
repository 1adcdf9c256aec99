"""Where is the object? The Grad-CAM paper's box: threshold the heatmap, box the biggest blob.

Selvaraju et al. 2017, section 4.1: keep the pixels above 15 % of the map's maximum and draw the
bounding box of the largest connected segment. Boxes are ``(x0, y0, x1, y1)`` in pixels of the
heatmap (the image as the model saw it), corners included (Pillow's rectangle convention).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Box", "bounding_boxes"]

Box = tuple[int, int, int, int]

#: 8-connected neighbours
_STRUCTURE = np.ones((3, 3), dtype=bool)


def _largest_region_box(mask: np.ndarray) -> Box | None:
    """The box of the largest 8-connected region of a 2-D mask (None if the mask is empty)."""
    from scipy import ndimage  # imported when a box is first asked for

    labels, count = ndimage.label(mask, structure=_STRUCTURE)
    if count == 0:
        return None
    biggest = 1 + int(np.argmax(np.bincount(labels.ravel(), minlength=count + 1)[1:]))
    rows, columns = ndimage.find_objects(labels, max_label=biggest)[biggest - 1]
    return (columns.start, rows.start, columns.stop - 1, rows.stop - 1)


def bounding_boxes(heatmaps: np.ndarray, threshold: float = 0.15) -> list[Box]:
    """One box per (H, W) map of an (N, H, W) stack, around its largest region >= threshold*max.

    Each map is labelled on its own. An all-zero map gets the whole image (nothing is singled
    out).
    """
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"expected (N, H, W) heatmaps, got shape {maps.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a fraction of the maximum in [0, 1], not {threshold}")
    _, h, w = maps.shape
    boxes: list[Box] = []
    for heat in maps:
        peak = heat.max() if heat.size else 0.0
        box = _largest_region_box(heat >= threshold * peak) if peak > 0 else None
        boxes.append(box or (0, 0, w - 1, h - 1))
    return boxes
