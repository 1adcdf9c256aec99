"""Colormaps and PNG output for uint8 images (grids, heatmaps, overlays)."""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["colorize", "colormap_lut", "save_png", "to_png_bytes", "upscale_nearest"]


@lru_cache(maxsize=32)
def _lut_with_bad(cmap: str) -> np.ndarray:
    """(257, 3) uint8: the 256 colors ``cmap(i, bytes=True)``, then the "bad" (NaN) color."""
    import matplotlib  # imported when a colormap is first used

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}") from None
    if cm.N != 256:
        cm = cm.resampled(256)
    lut = np.empty((257, 3), dtype=np.uint8)
    lut[:256] = cm(np.arange(256), bytes=True)[:, :3]
    lut[256] = cm(np.nan, bytes=True)[:3]
    lut.setflags(write=False)
    return lut


def colormap_lut(cmap: str = "viridis") -> np.ndarray:
    """The (256, 3) uint8 lookup table of a matplotlib colormap (read-only)."""
    return _lut_with_bad(cmap)[:256]


def colorize(gray: Any, cmap: str = "viridis") -> np.ndarray:
    """Map a 2-D image to (H, W, 3) uint8 RGB through a matplotlib colormap.

    uint8 values index the 256-entry LUT directly, so ``colorize(g)[i, j]`` equals
    ``matplotlib.colormaps[cmap](g[i, j], bytes=True)[:3]``. Floats are taken in [0, 1] and
    quantized the way matplotlib does (``floor(x * 256)``, 1.0 -> 255; out-of-range values are
    clipped, NaN gets the colormap's "bad" color), so they also match ``cmap(x, bytes=True)``.
    Other integer types are clipped to 0..255.
    """
    a = np.asarray(gray)
    lut = _lut_with_bad(cmap)
    if a.dtype == np.uint8:
        return lut[a]
    if a.dtype == np.bool_:
        return lut[a.astype(np.uint8) * 255]
    if np.issubdtype(a.dtype, np.integer):
        return lut[np.clip(a, 0, 255).astype(np.intp)]
    if not np.issubdtype(a.dtype, np.floating):
        raise TypeError(f"colorize expects uint8, integer or float values, got {a.dtype}")
    x = a.astype(np.float32 if a.dtype == np.float16 else a.dtype) * 256  # exact (power of 2)
    nan = np.isnan(x)
    has_nan = bool(nan.any())
    if has_nan:
        x[nan] = 0
    np.clip(x, 0, 255, out=x)
    idx = x.astype(np.intp)
    if has_nan:
        idx[nan] = 256
    return lut[idx]


def _as_uint8_image(array: Any) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"expected an (H, W), (H, W, 3) or (H, W, 4) image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if np.issubdtype(a.dtype, np.integer) and (a.size == 0 or (a.min() >= 0 and a.max() <= 255)):
        return a.astype(np.uint8)
    raise ValueError(
        f"expected uint8 pixels (or integers in 0..255), got {a.dtype}; convert floats first, "
        "e.g. colorize(x) for values in [0, 1] or np.clip(x, 0, 255).astype(np.uint8)"
    )


def _to_pil(array: Any) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(_as_uint8_image(array)))


def save_png(array: Any, path: str | Path) -> Path:
    """Save a uint8 gray/RGB/RGBA array as PNG, creating parent directories; returns the path."""
    path = Path(path)
    image = _to_pil(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def to_png_bytes(array: Any) -> bytes:
    """Encode a uint8 gray/RGB/RGBA array as PNG bytes (e.g. for a web response)."""
    buf = io.BytesIO()
    _to_pil(array).save(buf, format="PNG")
    return buf.getvalue()


def upscale_nearest(img: Any, factor: int) -> np.ndarray:
    """Enlarge an (H, W) or (H, W, C) image ``factor`` times with nearest-neighbour pixels."""
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor}")
    a = np.asarray(img)
    if a.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {a.shape}")
    f = int(factor)
    if f == 1:
        return a.copy()
    h, w = a.shape[:2]
    rest = a.shape[2:]
    out = np.empty((h, f, w, f, *rest), dtype=a.dtype)
    out[...] = a[:, None, :, None]
    return out.reshape(h * f, w * f, *rest)
