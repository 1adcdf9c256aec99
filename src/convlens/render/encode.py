"""Compact picture bytes for pages (report, explorer, notebook): PNG, JPEG and data URIs."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

from .color import colormap_lut

__all__ = ["data_uri", "grid_png", "jpeg_bytes", "photo_bytes"]


def grid_png(gray: np.ndarray, cmap: str = "viridis") -> bytes:
    """A 2-D uint8 image as an indexed PNG whose palette is ``cmap``.

    Same bytes as a grayscale PNG, shown in colour: 3x smaller than an RGB PNG of
    ``colorize(gray)`` with identical pixels on screen.
    """
    a = np.ascontiguousarray(np.asarray(gray, dtype=np.uint8))
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D uint8 grid, got shape {a.shape}")
    image = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
    image.putpalette(colormap_lut(cmap).tobytes())
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(rgb: Any, quality: int = 90) -> bytes:
    """An (H, W, 3) uint8 photo as JPEG bytes (photos and heatmap overlays)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))).save(
        buf, format="JPEG", quality=quality
    )
    return buf.getvalue()


def photo_bytes(pixels: Any) -> bytes:
    """Float or uint8 (H, W, 3) pixels 0..255 (numpy or torch) → JPEG bytes."""
    if hasattr(pixels, "detach"):
        pixels = pixels.detach().float().cpu().numpy()
    return jpeg_bytes(np.clip(np.asarray(pixels), 0, 255).round().astype(np.uint8))


def data_uri(data: bytes) -> str:
    """PNG or JPEG bytes as a ``data:`` URI (the type is read from the bytes' signature)."""
    mime = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
