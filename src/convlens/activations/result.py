"""What ``Model.activations`` returns: an ordered dict that displays itself in a notebook."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..render import data_uri, grid_png
from .empty import EmptyChannels, empty_channels
from .grid import activation_grid, as_numpy

__all__ = ["HTML_LAYERS", "Activations", "activations_html", "shape_text"]

#: The HTML view of an activations dict shows at most this many layers.
HTML_LAYERS = 32


class Activations(dict[str, np.ndarray]):
    """``{layer name: (N, H, W, C) array}`` in forward order; shows its grids in Jupyter."""

    def empty_channels(self) -> list[EmptyChannels]:
        """Per layer, the channels that are zero on every image (the book's blank activations)."""
        return empty_channels(self)

    def _repr_html_(self) -> str:
        return activations_html(self)


def shape_text(acts: np.ndarray) -> str:
    """``"112×112×32"``: the (H, W, C) of activations."""
    return "×".join(str(s) for s in acts.shape[-3:])


def activations_html(acts: Mapping[str, Any], image: int = 0, max_layers: int = HTML_LAYERS) -> str:
    """HTML for an activations dict: each layer's channel grid (viridis) and empty channels."""
    rows = []
    names = list(acts)
    empties = {row.layer: row for row in empty_channels({n: acts[n] for n in names[:max_layers]})}
    for name in names[:max_layers]:
        a = as_numpy(acts[name])
        one = a[image] if a.ndim == 4 else a
        grid = activation_grid(one)
        scale = max(1, 640 // max(grid.shape[1], 1))
        empty = empties[name]
        rows.append(
            f'<div style="margin:8px 0"><code>{html.escape(name)}</code> '
            f'<span style="color:#666">{shape_text(a)} · {empty.empty} of {empty.total} channels '
            f'empty</span><br><img src="{data_uri(grid_png(grid))}" '
            f'style="image-rendering:pixelated;width:{grid.shape[1] * scale}px;max-width:100%" '
            f'alt="{html.escape(name)}"></div>'
        )
    more = len(names) - max_layers
    if more > 0:
        rows.append(f"<p>… and {more} more layers: <code>cl.show(acts, layer=...)</code></p>")
    first = as_numpy(acts[names[0]]) if names else np.zeros((1,))
    count = first.shape[0] if first.ndim == 4 else 1
    head = f"<b>activations</b> of {len(names)} layers" + (
        f" (image {image} of {count})" if count > 1 else ""
    )
    return f"<div>{head}{''.join(rows)}</div>"
