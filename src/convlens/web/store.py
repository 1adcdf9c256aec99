"""In-memory state of the explorer: uploaded images and computed pictures, bounded LRUs.

Images are keyed by random ids (128 bits, never a path); whoever does not know an id cannot see
its image, and nothing is shared between ids.
"""

from __future__ import annotations

import io
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import ImageError
from ..images import load_image

__all__ = [
    "LRU", "ImageStore", "StoredImage", "UploadTooLarge", "decode_upload", "too_large",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

#: Pillow formats an upload may be in.
FORMATS = {"PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"}
#: Uploads are shrunk to at most this many pixels on their longer side.
MAX_SIDE = 1024


class UploadTooLarge(ImageError):
    """An upload over the size limit (bytes or pixels)."""


def too_large(limit: int) -> str:
    """The message for an upload over ``limit`` bytes."""
    return f"the upload is over the {limit / 2**20:.0f} MB limit; upload a smaller image"


class LRU(Generic[K, V]):
    """A thread-safe least-recently-used mapping with a fixed capacity."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> V:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return value

    def get_or_compute(self, key: K, compute: Callable[[], V]) -> V:
        """The cached value, or ``compute()`` stored (computed outside the lock)."""
        value = self.get(key)
        return value if value is not None else self.put(key, compute())

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class StoredImage:
    """One image in the explorer: uint8 (H, W, 3) pixels and a display name."""

    id: str
    name: str
    pixels: np.ndarray


class ImageStore:
    """The explorer's images, by random id; the oldest are forgotten past ``capacity``."""

    def __init__(self, capacity: int = 64):
        self._images: LRU[str, StoredImage] = LRU(capacity)

    def add(self, pixels: np.ndarray, name: str) -> StoredImage:
        array = _bounded(np.clip(pixels, 0, 255).astype(np.uint8))
        image = StoredImage(id=secrets.token_urlsafe(16), name=name, pixels=array)
        self._images.put(image.id, image)
        return image

    def get(self, image_id: str) -> StoredImage | None:
        return self._images.get(image_id)

    def __len__(self) -> int:
        return len(self._images)


def _bounded(pixels: np.ndarray) -> np.ndarray:
    h, w = pixels.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return np.ascontiguousarray(pixels)
    scale = MAX_SIDE / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))


def decode_upload(data: bytes, max_pixels: int) -> np.ndarray:
    """Uploaded bytes → uint8 (H, W, 3); not an image (or too many pixels) is an ``ImageError``."""
    if not data:
        raise ImageError("the upload is empty; choose an image file (PNG, JPEG, GIF, BMP, WebP)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in FORMATS:
                raise ImageError(
                    f"{img.format} images are not accepted; upload a PNG, JPEG, GIF, BMP, WebP "
                    "or TIFF file"
                )
            if img.width * img.height > max_pixels:
                raise UploadTooLarge(
                    f"the image is {img.width}×{img.height} pixels, over the limit of "
                    f"{max_pixels:,} pixels; upload a smaller image"
                )
            img.load()
            return np.clip(load_image(img), 0, 255).round().astype(np.uint8)
    except Image.DecompressionBombError:
        raise UploadTooLarge(
            f"the image has more than {max_pixels:,} pixels; upload a smaller image"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(
            "the upload is not an image Pillow can read; upload a PNG, JPEG, GIF, BMP, WebP or "
            "TIFF file"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        if isinstance(err, ImageError):
            raise
        raise ImageError(f"the image is corrupt or truncated ({err}); re-export it") from None
