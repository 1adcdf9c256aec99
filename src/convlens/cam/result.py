"""What a CAM call returns: heatmaps, raw maps, targets, scores and boxes, ready to draw."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..render import draw_box, draw_label, overlay, to_png_bytes
from .localize import Box, bounding_boxes

__all__ = ["CamResult"]

_MARGIN = 4


@dataclass
class CamResult:
    """Class activation maps of a batch of images, one row per (image, target).

    Attributes:
        method: the method's name (``"gradcam"``...).
        layers: the layer(s) explained; several layers are fused (mean of normalized maps).
        heatmap: (N, H, W) float32 in [0, 1] at the images' resolution: ReLU, bilinear
            upsampling, division by each map's max.
        raw: (N, h, w) float32, the method's map at the layer's resolution before ReLU and
            normalization (the last layer's, when several are fused; see ``raw_maps``).
        target: class index per row (-1 for a callable target).
        target_names: the class names.
        score: (N,) the target's score (logit) on the image.
        probability: (N,) the target's probability (softmax / sigmoid; the score for callables).
        boxes: ``(x0, y0, x1, y1)`` per row, corners included: the Grad-CAM paper's box around
            the largest region above ``threshold`` x the max (the whole image for an empty
            map). Worked out on first use (about 0.3 ms per map on a CPU), then kept.
        images: (N, H, W, 3) float32 pixels 0..255, as the model saw them.
        image_index: which input image each row explains (``"top-k"`` gives k rows per image).
        empty: (N,) True where the map is all zero (nothing pushed the score up).
        raw_maps: layer name → (N, h, w) raw map, for every layer.
        threshold: the fraction of each map's max that bounds its box.
    """

    method: str
    layers: list[str]
    heatmap: np.ndarray
    raw: np.ndarray
    target: list[int]
    target_names: list[str]
    score: np.ndarray
    probability: np.ndarray
    images: np.ndarray
    image_index: list[int]
    empty: np.ndarray
    raw_maps: dict[str, np.ndarray] = field(default_factory=dict)
    title: str = ""
    threshold: float = 0.15

    @cached_property
    def boxes(self) -> list[Box]:
        return bounding_boxes(self.heatmap, self.threshold)

    def __len__(self) -> int:
        return len(self.heatmap)

    def overlays(self, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
        """(N, H, W, 3) uint8: each heatmap in ``cmap`` at ``alpha`` over its image."""
        return np.stack([
            overlay(image, heat, alpha=alpha, cmap=cmap)
            for image, heat in zip(self.images, self.heatmap)
        ])

    def boxed(self, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
        """Overlays with each row's box drawn: (N, H, W, 3) uint8."""
        overlays = self.overlays(alpha, cmap)
        return np.stack([draw_box(picture, box) for picture, box in zip(overlays, self.boxes)])

    def caption(self, row: int) -> str:
        """``"Egyptian Mau 46% | Grad-CAM"``: the row's class, probability and method."""
        probability = float(self.probability[row])
        share = f" {probability:.0%}" if 0.0 <= probability <= 1.0 else ""
        return f"{self.target_names[row]}{share} | {self.title or self.method}"

    def annotated(self, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
        """Overlays with the box and the caption drawn: (N, H, W, 3) uint8."""
        return np.stack([
            draw_label(picture, self.caption(row))
            for row, picture in enumerate(self.boxed(alpha, cmap))
        ])

    def figure(self, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
        """The annotated overlays side by side on white: one uint8 (H, W, 3) picture."""
        pictures = self.annotated(alpha, cmap)
        n, h, w = pictures.shape[:3]
        canvas = np.full((h, n * w + (n - 1) * _MARGIN, 3), 255, dtype=np.uint8)
        for i, picture in enumerate(pictures):
            canvas[:, i * (w + _MARGIN) : i * (w + _MARGIN) + w] = picture
        return canvas

    def _repr_png_(self) -> bytes:
        return to_png_bytes(self.figure())

    def __repr__(self) -> str:
        h, w = self.heatmap.shape[1:] if len(self) else (0, 0)
        classes = ", ".join(dict.fromkeys(self.target_names))
        return (
            f"<CamResult {self.method} of {', '.join(self.layers)}: {len(self)} map(s) "
            f"{h}x{w} for {classes}>"
        )
