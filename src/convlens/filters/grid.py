"""Stitching filter images into one picture, as Deep Learning with Python does (black margins)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from . import FilterResult

__all__ = ["filter_grid"]


#: Filters per row of a gallery, as in the book.
FILTERS_PER_ROW = 8


def filter_grid(
    result: FilterResult | np.ndarray, per_row: int = FILTERS_PER_ROW, margin: int = 5
) -> np.ndarray:
    """(K, h, w, 3) images (or a FilterResult) → one uint8 image, ``per_row`` per row.

    Margins are ``margin`` black pixels between images (none around the outside), as in the book's
    ``stitched_filters``. With K images: ``min(K, per_row)`` columns, ``ceil(K / per_row)`` rows.
    """
    images = np.asarray(getattr(result, "images", result))
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise ValueError(f"expected (K, h, w, 3) images with K > 0, got shape {images.shape}")
    if per_row < 1 or margin < 0:
        raise ValueError(f"per_row must be >= 1 and margin >= 0 (got {per_row}, {margin})")
    count, h, w, _ = images.shape
    cols = min(per_row, count)
    rows = math.ceil(count / per_row)
    grid = np.zeros((rows * h + (rows - 1) * margin, cols * w + (cols - 1) * margin, 3), np.uint8)
    for k, image in enumerate(images):
        y, x = (k // per_row) * (h + margin), (k % per_row) * (w + margin)
        grid[y : y + h, x : x + w] = image
    return grid
