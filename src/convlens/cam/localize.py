"""Where is the object? The Grad-CAM paper's box: threshold the heatmap, box the biggest blob.

Selvaraju et al. 2017, section 4.1: keep the pixels above 15 % of the map's maximum and draw the
bounding box of the largest connected segment. Boxes are ``(x0, y0, x1, y1)`` in pixels of the
heatmap (the image as the model saw it), corners included (Pillow's rectangle convention).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["Box", "bounding_boxes"]

Box = tuple[int, int, int, int]

#: 8-connected neighbours within one image, never across images of a stack.
_STRUCTURE = np.zeros((3, 3, 3), dtype=bool)
_STRUCTURE[1] = True


def _extent(line: np.ndarray) -> tuple[int, int]:
    hits = np.flatnonzero(line)
    return int(hits[0]), int(hits[-1])


def bounding_boxes(heatmaps: np.ndarray, threshold: float = 0.15) -> list[Box]:
    """One box per (H, W) map of an (N, H, W) stack, around its largest region >= threshold*max.

    All the maps are labelled in one ``scipy.ndimage.label`` call. An all-zero map gets the whole
    image (nothing is singled out).
    """
    maps = np.asarray(heatmaps, dtype=np.float32)
    if maps.ndim == 2:
        maps = maps[None]
    if maps.ndim != 3:
        raise ValueError(f"expected (N, H, W) heatmaps, got shape {maps.shape}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold is a fraction of the maximum in [0, 1], not {threshold}")
    n, h, w = maps.shape
    peaks = maps.reshape(n, -1).max(axis=1) if maps.size else np.zeros(n, np.float32)
    cut = np.where(peaks > 0, threshold * peaks, np.inf).astype(np.float32)
    labels, count = ndimage.label(maps >= cut[:, None, None], structure=_STRUCTURE)
    boxes: list[Box] = [(0, 0, w - 1, h - 1)] * n
    if count == 0:
        return boxes
    sizes = np.bincount(labels.ravel(), minlength=count + 1) if count > n else None
    # labels are numbered in raster order: plane p holds labels (last of p - 1, last of p]
    last = labels.reshape(n, -1).max(axis=1) if n > 1 else np.array([count])
    first = 1
    for plane in range(n):
        if last[plane] >= first:
            if last[plane] == first:  # a single region
                blob = labels[plane] > 0
            else:
                assert sizes is not None
                biggest = first + int(np.argmax(sizes[first : last[plane] + 1]))
                blob = labels[plane] == biggest
            x0, x1 = _extent(blob.any(axis=0))
            y0, y1 = _extent(blob.any(axis=1))
            boxes[plane] = (x0, y0, x1, y1)
            first = last[plane] + 1
    return boxes
