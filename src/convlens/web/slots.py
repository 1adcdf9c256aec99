"""A served model with its lock, and the pictures the explorer computes with it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from ..activations import activation_grid, standardize_channels
from ..images import load_image
from ..models import LayerInfo, Model
from ..render import colorize, grid_png, jpeg_bytes, to_png_bytes, upscale_nearest
from .store import LRU, StoredImage

__all__ = ["ModelSlot"]

T = TypeVar("T")

#: Activation grids put this many channels in a row (the book's ``images_per_row``).
#: A single channel is enlarged to at least this many pixels on its longer side.
CHANNEL_SIDE = 256


class ModelSlot:
    """One model of the explorer. Its lock serializes model calls (hooks are not re-entrant)."""

    def __init__(self, name: str, model: Model):
        self.name = name
        self.model = model
        self.lock = threading.Lock()
        self._activations: LRU[tuple[str, str], np.ndarray] = LRU(16)
        self._pixels: LRU[str, torch.Tensor] = LRU(16)
        self._pictures: LRU[tuple[Any, ...], bytes] = LRU(256)

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` holding the model's lock (call this from a worker thread)."""
        with self.lock:
            return fn()

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {
            "name": self.name, "title": m.name, "framework": m.framework,
            "input_size": list(m.input_size), "parameters": m.parameter_count(),
            "output": m.output, "classes": self.classes(),
        }

    def classes(self) -> int | None:
        """How many classes the model tells apart (from its names, or its last layer)."""
        if self.model.class_names:
            return len(self.model.class_names)
        if self.model.output == "sigmoid":
            return 2  # [1 - p, p]
        shape = self.model.layers()[-1].output_shape
        return shape[-1] if shape is not None and len(shape) == 2 else None

    def layers(self) -> list[dict[str, Any]]:
        """Leaf layers with a spatial (H, W, C) output: the ones with a channel grid."""
        default = {info.name for info in self.model.resolve(None)}
        return [
            {
                "name": info.name, "kind": info.kind, "type": info.type,
                "output_shape": list(info.output_shape[1:]), "channels": info.channels,
                "default": info.name in default,
            }
            for info in self.model.layers()
            if info.spatial
        ]

    def layer(self, name: str) -> LayerInfo:
        return self.model.layer(name)

    def pixels(self, image: StoredImage) -> torch.Tensor:
        """The image at the model's input size, as the report reads it (on the device, cached)."""
        def compute() -> torch.Tensor:
            array = load_image(image.pixels, size=self.model.input_size)
            return self.model.to_pixels(array[None])

        return self._pixels.get_or_compute(image.id, compute)

    # -- computations (each takes the lock itself) ---------------------------------------------
    def predictions(self, image: StoredImage, top: int) -> list[dict[str, Any]]:
        answer = self.call(lambda: self.model.predict(self.pixels(image), top=top))[0]
        return [{"index": p.index, "name": p.name, "probability": p.probability} for p in answer]

    def activations(self, image: StoredImage, layer: LayerInfo) -> np.ndarray:
        """(H, W, C) activations of one layer on one image (cached)."""
        def compute() -> np.ndarray:
            acts = self.call(
                lambda: self.model.activations(self.pixels(image), layers=[layer.name])
            )
            return acts[layer.name][0]

        return self._activations.get_or_compute((image.id, layer.name), compute)

    def grid_png(self, image: StoredImage, layer: LayerInfo) -> bytes:
        return self._pictures.get_or_compute(
            ("grid", image.id, layer.name),
            lambda: grid_png(activation_grid(self.activations(image, layer))),
        )

    def channel_png(self, image: StoredImage, layer: LayerInfo, channel: int) -> bytes:
        def compute() -> bytes:
            acts = self.activations(image, layer)
            cell = standardize_channels(acts[:, :, channel : channel + 1])[0]
            factor = max(1, -(-CHANNEL_SIDE // max(cell.shape)))
            return to_png_bytes(upscale_nearest(colorize(cell), factor))

        return self._pictures.get_or_compute(("channel", image.id, layer.name, channel), compute)

    def cam(
        self, image: StoredImage, method: str, target: int | None, layer: str | None
    ) -> dict[str, Any]:
        """A CAM overlay (JPEG bytes) and its facts."""
        def compute() -> Any:
            options: dict[str, Any] = {"method": method, "layer": layer}
            if target is not None:
                options["target"] = target
            return self.model.cam(self.pixels(image), **options)

        result = self.call(compute)
        box = [int(v) for v in result.boxes[0]]
        return {
            "method": result.method, "layers": list(result.layers),
            "target": int(result.target[0]), "target_name": result.target_names[0],
            "score": float(result.score[0]), "box": box,
            "jpeg": jpeg_bytes(result.boxed()[0]),
        }
