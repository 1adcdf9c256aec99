"""What ``Model.activations`` returns: an ordered dict that displays itself in a notebook."""

from __future__ import annotations

import numpy as np

from .empty import EmptyChannels, empty_channels


class Activations(dict[str, np.ndarray]):
    """``{layer name: (N, H, W, C) array}`` in forward order; shows its grids in Jupyter."""

    def empty_channels(self) -> list[EmptyChannels]:
        """Per layer, the channels that are zero on every image (the seed's blank activations)."""
        return empty_channels(self)

    def _repr_html_(self) -> str:
        from ..notebook import activations_html

        return activations_html(self)
