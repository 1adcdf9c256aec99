"""``activations``: the entry point ``Model.activations`` calls."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..capture import layer_outputs
from ..errors import ModelError
from ..models import register_view
from .result import Activations

if TYPE_CHECKING:
    from ..models import Images, Model

__all__ = ["activations"]


@register_view("activations")
def activations(
    model: Model, images: Images, layers: str | Iterable[str] | None = None, *,
    batch_size: int = 32,
) -> Activations:
    """Outputs of the chosen layers (default: conv and pooling) in one forward pass per batch.

    Returns ``{layer name: (N, H, W, C) float32 array}`` in forward order. For torch models
    the arrays are channels-last views of the network's own NCHW memory (no copy).
    """
    if batch_size < 1:
        raise ModelError(f"batch_size must be at least 1, not {batch_size}")
    chosen = model.resolve(layers)
    return Activations(layer_outputs(model, model.to_pixels(images), chosen, batch_size))
