"""A served model with its lock and worker, and the pictures the explorer computes with it."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch

from ..activations import activation_grid, standardize_channels
from ..cam import method_class, target_layers
from ..images import load_image
from ..models import LayerInfo, Model
from ..progress import Advance
from ..render import colorize, data_uri, grid_png, jpeg_bytes, to_png_bytes, upscale_nearest
from .store import LRU, StoredImage
from .workers import Worker

__all__ = ["ModelSlot"]

T = TypeVar("T")

#: A single channel is enlarged to at least this many pixels on its longer side.
CHANNEL_SIDE = 256
#: Channels per call of a filter gallery (bounds the memory of one ascent).
FILTER_CHUNK = 8


class ModelSlot:
    """One model of the explorer.

    Its lock serializes model calls (hooks are not re-entrant); its worker thread runs the quick
    calls in order. Heavy jobs run on a private copy of a PyTorch model (``heavy()``), so the
    model keeps answering meanwhile; a model that cannot be copied shares its lock with them.
    Facts and layers are worked out once, here: listing them never waits for the model.
    """

    def __init__(self, name: str, model: Model, *, max_pending: int = 256):
        self.name = name
        self.model = model
        self.lock = threading.Lock()
        self.worker = Worker(f"convlens-{name}", max_pending=max_pending)
        self._activations: LRU[tuple[str, str], np.ndarray] = LRU(16)
        self._pixels: LRU[str, torch.Tensor] = LRU(16)
        self._pictures: LRU[tuple[Any, ...], bytes] = LRU(256)
        self._heavy: tuple[Model, threading.Lock] | None = None
        self.facts = self._describe()
        self.spatial_layers = self._layers()

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` holding the model's lock (call this from a worker thread)."""
        with self.lock:
            return fn()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this model's worker thread (``fn`` takes the lock itself)."""
        return await self.worker.run(fn, *args)

    def heavy(self) -> tuple[Model, threading.Lock]:
        """The model heavy jobs run on, and its lock: a private copy when one can be made."""
        if self._heavy is None:
            self._heavy = (self.model, self.lock)
            if self.model.framework == "torch":
                try:
                    with self.lock:  # no call runs, so no hook is copied along
                        self._heavy = (copy.deepcopy(self.model), threading.Lock())
                except Exception:  # a module that cannot be copied: jobs share the model
                    self._heavy = (self.model, self.lock)
        return self._heavy

    def _describe(self) -> dict[str, Any]:
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

    def _layers(self) -> list[dict[str, Any]]:
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
        self, image: StoredImage, method: str, target: int | None, layer: str | None,
        progress: Advance | None = None,
    ) -> dict[str, Any]:
        """A CAM overlay (a JPEG data URI) and its facts; a heavy method runs on ``heavy()``."""
        options = method_class(method).quick_options
        model, lock = self.heavy() if progress is not None else (self.model, self.lock)
        extra: dict[str, Any] = {} if target is None else {"target": target}
        if progress is not None:
            extra["progress"] = progress
        with lock:
            result = model.cam(self.pixels(image), method=method, layer=layer, **options, **extra)
        return {
            "method": result.method, "layers": list(result.layers),
            "target": int(result.target[0]), "target_name": result.target_names[0],
            "score": float(result.score[0]), "box": [int(v) for v in result.boxes[0]],
            "image": data_uri(jpeg_bytes(result.boxed()[0])),
        }

    def filter_gallery(
        self, layer: str, recipe: str, channels: list[int], steps: int | None, progress: Advance,
    ) -> tuple[dict[str, Any], bytes]:
        """A layer's filters (on ``heavy()``, in chunks): their facts and the gallery PNG."""
        from ..filters.grid import FILTERS_PER_ROW, filter_grid

        model, lock = self.heavy()
        parts = []
        for start in range(0, len(channels), FILTER_CHUNK):
            options: dict[str, Any] = {"channels": channels[start : start + FILTER_CHUNK],
                                       "recipe": recipe, "progress": progress}
            if steps is not None:
                options["steps"] = steps
            with lock:
                parts.append(model.filters(layer, **options))
        images = np.concatenate([p.images for p in parts])
        facts = {
            "layer": layer, "recipe": recipe, "channels": channels,
            "size": list(images.shape[1:3]), "per_row": FILTERS_PER_ROW,
            "activation": [_number(v) for p in parts for v in p.activation],
            "quality": [_number(v) for p in parts for v in p.quality],
        }
        return facts, to_png_bytes(filter_grid(images, per_row=FILTERS_PER_ROW))


def cam_method(name: str) -> tuple[str, bool]:
    """A method name or alias as ``cam()`` takes it → (its canonical name, whether it is heavy).

    Heavy methods run one forward pass per channel: they are the ones with ``quick_options`` (the
    report's, e.g. Score-CAM's ``top_k``), and run as jobs, with those options.
    """
    cls = method_class(name)
    return cls.name, bool(cls.quick_options)


def check_cam_layer(model: Model, layer: str | None) -> None:
    """Raise the error ``cam()`` would give for ``layer``, before any work starts."""
    target_layers(model, layer)


def _number(value: Any) -> float | None:
    value = float(value)
    return round(value, 4) if np.isfinite(value) else None
