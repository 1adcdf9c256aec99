"""Recording layer outputs over a batch of images, channels-last, in NumPy.

The core under the activations view (and anything else that reads many layers at once): batches
go through ``Model.capture`` with ``stop_early``, so nothing deeper than the last wanted layer is
computed, and each output becomes a channels-last NumPy view of the network's own memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .models import LayerInfo, Model

__all__ = ["layer_outputs"]


def layer_outputs(
    model: Model, pixels: torch.Tensor, layers: Sequence[LayerInfo], batch_size: int = 32
) -> dict[str, np.ndarray]:
    """``{layer name: (N, H, W, C) float32 array}`` of ``pixels`` (N, H, W, 3), forward order.

    Arrays are channels-last views of the network's output memory (no copy) when one batch
    holds every image.
    """
    parts: dict[str, list[np.ndarray]] = {info.name: [] for info in layers}
    with model.capture(layers, stop_early=True) as cap:
        for start in range(0, pixels.shape[0], batch_size):
            cap.run(model.prepare(pixels[start : start + batch_size]))
            for name, tensor in cap.outputs.items():
                parts[name].append(model.nhwc(tensor).float().cpu().numpy())
    return {
        name: arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        for name, arrays in parts.items()
    }
