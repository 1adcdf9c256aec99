"""Jupyter helpers: :func:`show` draws any convlens result as one matplotlib figure.

Figures are built with ``matplotlib.figure.Figure`` (not pyplot), so a returned figure is shown
once, and nothing accumulates in pyplot's global state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .activations import activation_grid
from .activations.grid import as_numpy
from .activations.result import shape_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["show"]

#: Figures are at most this wide (inches); pictures keep their aspect ratio.
MAX_WIDTH_IN = 12.0


def _figure(picture: np.ndarray, title: str | None, cmap: str | None, dpi: int = 100) -> Figure:
    h, w = picture.shape[:2]
    width = min(MAX_WIDTH_IN, max(3.0, w / dpi))
    height = max(1.0, width * h / max(w, 1)) + (0.3 if title else 0.0)
    from matplotlib.figure import Figure  # imported when a figure is drawn

    fig = Figure(figsize=(width, height), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1 - (0.3 / height if title else 0.0)))
    ax.imshow(picture, cmap=cmap, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / height)
    return fig


def show(obj: Any, *, layer: str | None = None, image: int = 0, title: str | None = None,
         cmap: str = "viridis", per_row: int = 16) -> Figure:
    """One matplotlib figure (a single ``imshow``) for a convlens result.

    ``obj`` is an activations dict (``layer`` picks one, default the first; ``image`` picks the
    image of the batch), one layer's activations (N, H, W, C) or (H, W, C), a 2-D grid or heatmap,
    an RGB picture, a ``CamResult`` (its annotated overlays side by side) or a ``FilterResult``
    (its gallery).
    """
    from .cam import CamResult
    from .filters import FilterResult, filter_grid

    if isinstance(obj, CamResult):
        return _figure(obj.figure(), title or obj.title or obj.method, None)
    if isinstance(obj, FilterResult):
        return _figure(filter_grid(obj), title or f"{obj.layer}: {obj.recipe} filters", None)
    if isinstance(obj, Mapping):
        if not obj:
            raise ValueError("no activations to show (the dict is empty)")
        name = layer if layer is not None else next(iter(obj))
        if name not in obj:
            raise KeyError(f"no layer {name!r} among these activations ({', '.join(obj)})")
        acts = as_numpy(obj[name])
        grid = activation_grid(acts[image] if acts.ndim == 4 else acts, per_row)
        return _figure(grid, title or f"{name}: {shape_text(acts)}", cmap)
    array = as_numpy(obj)
    if array.ndim == 2:
        return _figure(array, title, cmap)
    if array.ndim == 3 and array.shape[-1] == 3 and (array.dtype == np.uint8 or array.max() > 1):
        return _figure(np.clip(array, 0, 255).astype(np.uint8), title, None)
    if array.ndim in (3, 4):
        acts = array[image] if array.ndim == 4 else array
        return _figure(activation_grid(acts, per_row), title or shape_text(array), cmap)
    raise TypeError(
        f"show() draws activations, grids, pictures, CamResult and FilterResult objects; "
        f"got {type(obj).__name__} of shape {getattr(array, 'shape', '?')}"
    )

