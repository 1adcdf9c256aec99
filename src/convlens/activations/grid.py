"""Grids of per-channel activation maps, as in Chollet's "visualizing intermediate activations".

The book's code standardizes every channel in a Python loop and pastes it into a float64 grid.
:func:`activation_grid` computes the same pixels, bit for bit, with whole-array numpy operations;
:func:`book_activation_grid` keeps the original loop as the reference.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import ConvlensError

__all__ = [
    "ActivationShapeError",
    "activation_grid",
    "as_numpy",
    "book_activation_grid",
    "channel_image",
    "standardize_channels",
]

# A channel whose std is below this fraction of |mean| is checked for being exactly constant.
_CONSTANT_RTOL = 1e-4
# Bytes of input read per slab when putting channels first (fits in L1 cache).
_TRANSPOSE_SLAB_BYTES = 32 * 1024


class ActivationShapeError(ConvlensError, ValueError):
    """Activations of the wrong shape (e.g. a batch where one image is expected)."""


def as_numpy(acts: Any) -> np.ndarray:
    """Return ``acts`` as a numpy array (torch tensors are converted once, on the CPU)."""
    if hasattr(acts, "detach"):  # torch.Tensor, without importing torch
        t = acts.detach()
        if t.is_floating_point() and str(t.dtype) not in ("torch.float32", "torch.float64"):
            t = t.float()  # bfloat16/float16 have no (exact) numpy counterpart here
        return t.cpu().numpy()
    return np.asarray(acts)


def _single_image(acts: Any) -> np.ndarray:
    """Return the (H, W, C) float32/float64 activations of one image."""
    a = as_numpy(acts)
    if a.ndim == 4:
        if a.shape[0] != 1:
            raise ActivationShapeError(
                f"expected the activations of one image, shape (H, W, C) or (1, H, W, C); "
                f"got a batch of {a.shape[0]} (shape {a.shape}): pass one image, e.g. acts[i]"
            )
        a = a[0]
    elif a.ndim != 3:
        raise ActivationShapeError(
            f"expected channels-last activations of shape (H, W, C) or (1, H, W, C), "
            f"got shape {a.shape}"
        )
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    return a


def _fallback_rows(rows: np.ndarray) -> np.ndarray:
    """Standardize degenerate rows in float64 using their finite values only.

    Used for channels on which the book's formula yields NaN/inf (non-finite values, overflowing
    sums, underflowing variance). +inf maps to 255, -inf and NaN to 0.
    """
    v = rows.astype(np.float64)
    finite = np.isfinite(v)
    count = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    mean = np.where(finite, v, 0.0).sum(axis=1, keepdims=True) / count
    dev = np.where(finite, v - mean, 0.0)
    std = np.sqrt((dev * dev).sum(axis=1, keepdims=True) / count)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(std > 0, dev / std * 64 + 128, 128.0)
    out[np.isposinf(v)] = 255.0
    out[np.isneginf(v) | np.isnan(v)] = 0.0
    return out


def _channels_first(a2: np.ndarray) -> np.ndarray:
    """Return a new C-contiguous ``(C, N)`` copy of the ``(N, C)`` array ``a2``.

    A plain ``np.ascontiguousarray(a2.T)`` reads with a stride of C elements and thrashes the
    cache; copying ~32 KiB slabs of spatial positions at a time is 1.5-4x faster.
    """
    n, c = a2.shape
    if a2.T.flags.c_contiguous:  # already channel-major (e.g. a permuted NCHW tensor)
        return a2.T.copy()
    out = np.empty((c, n), dtype=a2.dtype)
    step = max(8, _TRANSPOSE_SLAB_BYTES // (c * a2.itemsize))
    for i in range(0, n, step):  # a few spatial slabs, not a loop over channels
        out[:, i : i + step] = a2[i : i + step].T
    return out


def standardize_channels(acts: Any) -> np.ndarray:
    """Standardize each channel like the book and return ``(C, H, W)`` uint8 images.

    ``acts`` is (H, W, C) or (1, H, W, C), numpy or torch. Per channel: ``x -= x.mean()``,
    ``x /= x.std()``, ``x *= 64``, ``x += 128``, clip to [0, 255], cast to uint8 -- the same
    float32 (or float64) operations in the book's order, so the result is bit-exact.

    Differences from the book, by design: all-zero channels stay 0 (the book tests
    ``sum != 0``, the same for non-negative data); constant non-zero channels map to 128; channels
    the book's code would turn into NaN/inf garbage are standardized over their finite values
    (+inf -> 255, -inf and NaN -> 0).
    """
    a = _single_image(acts)
    h, w, c = a.shape
    n = h * w
    if n == 0 or c == 0:
        return np.zeros((c, h, w), dtype=np.uint8)
    a2 = a.reshape(n, c)
    # Channels first and contiguous: numpy then reduces each row with the same pairwise
    # summation it uses on one contiguous channel, which is what makes the result bit-exact.
    z = _channels_first(a2)

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = z.mean(axis=1)
        z -= mean[:, None]
        std = z.std(axis=1)

        # Channels where the book's formula is degenerate (std 0 or not finite), and channels
        # whose tiny relative std may come from a constant channel: decide them exactly.
        bad = ~(np.isfinite(std) & (std > 0))
        check = np.flatnonzero(bad | (std <= _CONSTANT_RTOL * np.abs(mean)))
        special: list[tuple[np.ndarray, Any]] = []
        if check.size:
            # An all-zero channel has mean 0 and stays all zero after centering (and only it).
            zero = (mean[check] == 0) & ~z[check].any(axis=1)
            special.append((check[zero], 0))
            others = check[~zero]
            if others.size:
                rows = a2[:, others].T  # the input values of these few channels
                const = rows.max(axis=1) == rows.min(axis=1)
                special.append((others[const], 128))
                rest = bad[others] & ~const
                if rest.any():
                    special.append((others[rest], _fallback_rows(rows[rest])))

        z /= std[:, None]
        z *= 64
        z += 128
        for index, value in special:
            z[index] = value

    np.clip(z, 0, 255, out=z)
    return z.astype(np.uint8).reshape(c, h, w)


#: Channels per grid row, as in the book.
IMAGES_PER_ROW = 16


def activation_grid(
    acts: Any, images_per_row: int = IMAGES_PER_ROW, *, sep: int = 1, sep_value: int = 0
) -> np.ndarray:
    """Tile all standardized channels of one image into a 2-D uint8 grid.

    ``acts`` is (H, W, C) or (1, H, W, C) channels-last, numpy or torch (a PyTorch NCHW
    output must be permuted first: ``t.permute(0, 2, 3, 1)``). Cells are H x W, separated by
    ``sep`` pixels of ``sep_value``, ``images_per_row`` per row (fewer if C is smaller). With the
    defaults and C a multiple of ``images_per_row`` the grid equals
    ``book_activation_grid(acts).astype(np.uint8)``; otherwise, unlike the book, the remaining
    channels are shown too, in a last row padded with zero cells.
    """
    if images_per_row < 1:
        raise ValueError(f"images_per_row must be >= 1, got {images_per_row}")
    if sep < 0:
        raise ValueError(f"sep must be >= 0, got {sep}")
    if not 0 <= sep_value <= 255:
        raise ValueError(f"sep_value must be in [0, 255], got {sep_value}")
    cells = standardize_channels(acts)
    c, h, w = cells.shape
    if c == 0:
        return np.zeros((0, 0), dtype=np.uint8)
    ncols = min(images_per_row, c)
    nrows = -(-c // ncols)
    height, width = nrows * (h + sep) - sep, ncols * (w + sep) - sep
    grid = np.full((height, width), sep_value, dtype=np.uint8)
    # (row, y, col, x) view of the cell pixels; cells never overlap, so writing through it is safe.
    view = as_strided(
        grid, shape=(nrows, h, ncols, w), strides=((h + sep) * width, width, w + sep, 1)
    ).transpose(0, 2, 1, 3)
    full_rows = c // ncols
    full = full_rows * ncols
    view[:full_rows] = cells[:full].reshape(full_rows, ncols, h, w)
    if full < c:
        view[-1, : c - full] = cells[full:]
        view[-1, c - full :] = 0
    return grid


def book_activation_grid(layer_activation: Any, images_per_row: int = 16) -> np.ndarray:
    """The book's loop, verbatim: the reference for tests and benchmarks.

    ``layer_activation`` is (1, size, size, n_features); returns the float64 ``display_grid``.
    Channels beyond the last full row are dropped, as in the book.
    """
    layer_activation = as_numpy(layer_activation)
    n_features = layer_activation.shape[-1]
    size = layer_activation.shape[1]
    n_cols = n_features // images_per_row
    display_grid = np.zeros(((size + 1) * n_cols - 1, images_per_row * (size + 1) - 1))
    for col in range(n_cols):
        for row in range(images_per_row):
            channel_index = col * images_per_row + row
            channel_image = layer_activation[0, :, :, channel_index].copy()
            if channel_image.sum() != 0:
                channel_image -= channel_image.mean()
                channel_image /= channel_image.std()
                channel_image *= 64
                channel_image += 128
            channel_image = np.clip(channel_image, 0, 255).astype("uint8")
            display_grid[
                col * (size + 1) : (col + 1) * size + col,
                row * (size + 1) : (row + 1) * size + row,
            ] = channel_image
    return display_grid


def channel_image(acts: Any, index: int) -> np.ndarray:
    """Return the raw float (H, W) map of channel ``index`` of one image.

    The book's ``plt.matshow(activations[0][0, :, :, 5], cmap="viridis")`` is
    ``plt.matshow(channel_image(activations[0], 5), cmap="viridis")``.
    """
    a = _single_image(acts)
    c = a.shape[-1]
    if not -c <= index < c:
        raise IndexError(f"channel index {index} out of range for {c} channels")
    return np.ascontiguousarray(a[:, :, index])
