"""Jupyter helpers: :func:`show` draws any convlens result as one matplotlib figure, and
:func:`activations_html` is what an activations dict looks like in a notebook.

Figures are built with ``matplotlib.figure.Figure`` (not pyplot), so a returned figure is shown
once, and nothing accumulates in pyplot's global state.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .activations import activation_grid, empty_channels
from .report.pictures import data_uri, grid_png

__all__ = ["activations_html", "show"]

#: Figures are at most this wide (inches); pictures keep their aspect ratio.
MAX_WIDTH_IN = 12.0
#: The HTML view of an activations dict shows at most this many layers.
HTML_LAYERS = 32


def _figure(picture: np.ndarray, title: str | None, cmap: str | None, dpi: int = 100) -> Figure:
    h, w = picture.shape[:2]
    width = min(MAX_WIDTH_IN, max(3.0, w / dpi))
    height = max(1.0, width * h / max(w, 1)) + (0.3 if title else 0.0)
    fig = Figure(figsize=(width, height), dpi=dpi)
    ax = fig.add_axes((0, 0, 1, 1 - (0.3 / height if title else 0.0)))
    ax.imshow(picture, cmap=cmap, interpolation="nearest", aspect="equal")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.05 / height)
    return fig


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().float().cpu().numpy()
    return np.asarray(value)


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
        acts = _numpy(obj[name])
        grid = activation_grid(acts[image] if acts.ndim == 4 else acts, per_row)
        return _figure(grid, title or f"{name}: {_shape(acts)}", cmap)
    array = _numpy(obj)
    if array.ndim == 2:
        return _figure(array, title, cmap)
    if array.ndim == 3 and array.shape[-1] == 3 and (array.dtype == np.uint8 or array.max() > 1):
        return _figure(np.clip(array, 0, 255).astype(np.uint8), title, None)
    if array.ndim in (3, 4):
        acts = array[image] if array.ndim == 4 else array
        return _figure(activation_grid(acts, per_row), title or _shape(array), cmap)
    raise TypeError(
        f"show() draws activations, grids, pictures, CamResult and FilterResult objects; "
        f"got {type(obj).__name__} of shape {getattr(array, 'shape', '?')}"
    )


def _shape(acts: np.ndarray) -> str:
    return "×".join(str(s) for s in acts.shape[-3:])


def activations_html(acts: Mapping[str, Any], image: int = 0, max_layers: int = HTML_LAYERS) -> str:
    """HTML for an activations dict: each layer's channel grid (viridis) and empty channels."""
    rows = []
    names = list(acts)
    empties = {row.layer: row for row in empty_channels({n: acts[n] for n in names[:max_layers]})}
    for name in names[:max_layers]:
        a = _numpy(acts[name])
        one = a[image] if a.ndim == 4 else a
        grid = activation_grid(one)
        scale = max(1, 640 // max(grid.shape[1], 1))
        empty = empties[name]
        rows.append(
            f'<div style="margin:8px 0"><code>{html.escape(name)}</code> '
            f'<span style="color:#666">{_shape(a)} · {empty.empty} of {empty.total} channels '
            f'empty</span><br><img src="{data_uri(grid_png(grid))}" '
            f'style="image-rendering:pixelated;width:{grid.shape[1] * scale}px;max-width:100%" '
            f'alt="{html.escape(name)}"></div>'
        )
    more = len(names) - max_layers
    if more > 0:
        rows.append(f"<p>… and {more} more layers: <code>cl.show(acts, layer=...)</code></p>")
    first = _numpy(acts[names[0]]) if names else np.zeros((1,))
    count = first.shape[0] if first.ndim == 4 else 1
    head = f"<b>activations</b> of {len(names)} layers" + (
        f" (image {image} of {count})" if count > 1 else ""
    )
    return f"<div>{head}{''.join(rows)}</div>"
