"""Heatmap overlays (Grad-CAM style) and simple annotations drawn with Pillow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .color import colorize

__all__ = ["draw_box", "draw_label", "overlay"]


def _rgb_float(image: Any) -> np.ndarray:
    """(H, W, 3) float32 pixels in 0..255 from a gray, RGB or RGBA image (uint8 or float)."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[2] == 4:  # drop alpha
        img = img[:, :, :3]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {np.shape(image)}")
    return img.astype(np.float32)


def _rgb_uint8(image: Any) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3:
        return img.copy()
    return np.clip(_rgb_float(img), 0, 255).astype(np.uint8)


def overlay(image: Any, heatmap: Any, alpha: float = 0.4, cmap: str = "jet") -> np.ndarray:
    """Superimpose a [0, 1] heatmap on an image, as in Chollet's Grad-CAM example.

    ``image`` is (H, W, 3) or (H, W) with values 0..255 (uint8 or float); ``heatmap`` is a float
    (h, w) map in [0, 1] (clipped; NaN -> 0). If (h, w) != (H, W) the heatmap is resized with
    Pillow's bilinear filter first. Then, like the seed::

        jet_heatmap = lut[np.uint8(255 * heatmap)]   # cmap(i, bytes=True)[:3], uint8 colors
        superimposed = jet_heatmap * alpha + img

    and the result is ``np.clip(superimposed, 0, 255).astype(np.uint8)``, (H, W, 3). The seed
    instead min-max rescales the sum (keras ``array_to_img``) and resizes the colored heatmap;
    clipping keeps the image's own brightness.
    """
    img = _rgb_float(image)
    h, w = img.shape[:2]
    heat = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if heat.ndim != 2:
        raise ValueError(f"expected a 2-D heatmap, got shape {heat.shape}")
    heat = np.clip(heat, 0.0, 1.0)
    if heat.shape != (h, w):
        resized = Image.fromarray(np.ascontiguousarray(heat)).resize(
            (w, h), Image.Resampling.BILINEAR
        )
        heat = np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)
    colors = colorize((255 * heat).astype(np.uint8), cmap)  # the book's uint8(255 * heatmap)
    out = colors.astype(np.float32) * np.float32(alpha) + img
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def draw_box(
    image: Any,
    box: Sequence[float],
    color: Sequence[int] = (255, 255, 255),
    width: int = 2,
) -> np.ndarray:
    """Return a copy of ``image`` (as (H, W, 3) uint8) with a rectangle outline drawn on it.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels, corners included (Pillow's convention); the
    outline is ``width`` pixels thick, drawn inward from the box edge.
    """
    pil = Image.fromarray(_rgb_uint8(image))
    x0, y0, x1, y1 = box
    ImageDraw.Draw(pil).rectangle(
        (x0, y0, x1, y1), outline=tuple(int(c) for c in color), width=int(width)
    )
    return np.asarray(pil).copy()


def draw_label(
    image: Any,
    text: str,
    *,
    xy: tuple[int, int] = (0, 0),
    color: Sequence[int] = (255, 255, 255),
    background: Sequence[int] | None = (0, 0, 0),
    padding: int = 2,
) -> np.ndarray:
    """Return a copy of ``image`` (as (H, W, 3) uint8) with ``text`` written at ``xy``.

    Uses Pillow's built-in default font (nothing is downloaded); the text sits on a filled
    ``background`` box (``None`` for no box) with ``padding`` pixels around it.
    """
    pil = Image.fromarray(_rgb_uint8(image))
    draw = ImageDraw.Draw(pil)
    x, y = xy
    if background is not None:
        _, _, right, bottom = draw.textbbox((x + padding, y + padding), text)
        draw.rectangle(
            (x, y, right + padding - 1, bottom + padding - 1),
            fill=tuple(int(c) for c in background),
        )
    draw.text((x + padding, y + padding), text, fill=tuple(int(c) for c in color))
    return np.asarray(pil).copy()
