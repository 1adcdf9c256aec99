"""Reading images into float32 RGB arrays, and the bundled sample photos.

Everything here returns ``float32`` arrays of shape ``(H, W, 3)`` with values in 0..255: the same
pixels as ``keras.utils.load_img`` + ``img_to_array`` (nearest-neighbour resizing by default).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

ImageLike = str | os.PathLike | Image.Image | np.ndarray

#: Sample photos bundled with scikit-image, with the ImageNet class a good model sees in each.
SAMPLES: dict[str, str] = {
    "chelsea": "a cat (Egyptian / tiger cat)",
    "coffee": "a cup of coffee (espresso)",
    "camera": "a photographer behind a camera (tripod)",
    "stereo_motorcycle": "a motorcycle (moped)",
}

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


@cache
def _sample_array(name: str) -> np.ndarray:
    from skimage import data

    img = getattr(data, name)()
    if name == "stereo_motorcycle":
        img = img[0]
    return _as_rgb_array(np.asarray(img))


def sample_image(name: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """A bundled sample photo (see ``SAMPLES``) as float32 (H, W, 3) 0..255."""
    if name not in SAMPLES:
        raise ImageError(f"no sample photo {name!r}; the samples are {', '.join(SAMPLES)}")
    cached = _sample_array(name)
    arr = cached if size is None else resize(cached, size)
    return arr.copy() if arr is cached else arr  # never hand out the cached array


def _as_rgb_array(arr: np.ndarray) -> np.ndarray:
    """Any 2-D / 3-D numeric array → float32 (H, W, 3) in 0..255."""
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.dtype == np.uint16 or (arr.dtype.kind in "iu" and arr.max(initial=0) > 255):
        arr = arr.astype(np.float32) * (255.0 / 65535.0)
    elif arr.dtype == bool:
        arr = arr.astype(np.float32) * 255.0
    arr = arr.astype(np.float32, copy=False)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]  # drop alpha, as Pillow's convert("RGB") does
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise ImageError(
            f"an image array must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4); got {arr.shape}"
        )
    return np.ascontiguousarray(arr)


def _pil_to_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float32)
        return _as_rgb_array(arr * (255.0 / 65535.0))  # 16-bit → 0..255
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        scale = 255.0 if arr.max(initial=0) <= 1.0 else 1.0
        return _as_rgb_array(arr * scale)
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, LA, P, RGBA, CMYK, YCbCr ...
    return np.asarray(img, dtype=np.float32)  # a new, writable array (uint8 -> float32)


def resize(arr: np.ndarray, size: tuple[int, int], interpolation: str = "nearest") -> np.ndarray:
    """Resize a float (H, W, 3) 0..255 array to ``size`` = (height, width)."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    img = Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8))
    return np.asarray(img.resize((w, h), _resample(interpolation)), dtype=np.float32)


def _resample(interpolation: str) -> Image.Resampling:
    try:
        return _RESAMPLE[interpolation]
    except KeyError:
        raise ImageError(
            f"unknown interpolation {interpolation!r}; use one of {', '.join(_RESAMPLE)}"
        ) from None


def load_image(
    source: ImageLike,
    size: tuple[int, int] | int | None = None,
    interpolation: str = "nearest",
) -> np.ndarray:
    """Read an image as float32 (H, W, 3) RGB in 0..255.

    ``source`` is a path, a sample name (``"chelsea"``, or ``"sample:chelsea"``), a PIL image or an
    array. Grayscale, palette, RGBA and 16-bit images are converted. ``size`` is (height, width)
    or one int for a square; resizing uses ``interpolation`` (Keras's default, nearest).
    """
    if isinstance(size, int):
        size = (size, size)
    if isinstance(source, np.ndarray):
        arr = _as_rgb_array(source)
    elif isinstance(source, Image.Image):
        arr = _pil_to_array(source)
    elif isinstance(source, (str, os.PathLike)):
        arr = _read_file(source)
    else:
        raise ImageError(
            f"cannot read an image from a {type(source).__name__}; "
            "pass a file path, a sample name, a PIL image or a NumPy array"
        )
    if size is not None:
        arr = resize(arr, size, interpolation)
    return arr


def _read_file(source: str | os.PathLike) -> np.ndarray:
    text = os.fspath(source)
    name = text.removeprefix("sample:")
    if name in SAMPLES and (text.startswith("sample:") or not os.path.exists(text)):
        return sample_image(name)
    path = Path(text)
    if not path.exists():
        raise ImageError(
            f"image file not found: {path} (check the path; bundled samples: {', '.join(SAMPLES)})"
        )
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file")
    try:
        with Image.open(path) as img:
            img.load()
            return _pil_to_array(img)
    except UnidentifiedImageError:
        raise ImageError(
            f"{path} is not an image Pillow can read (is it really a "
            f"{path.suffix or 'picture'}?); use a JPEG, PNG, BMP, GIF, TIFF or WebP file"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageError(
            f"{path} is corrupt or truncated ({err}); re-export or re-download the file"
        ) from None


def load_images(
    sources: Sequence[ImageLike],
    size: tuple[int, int] | int | None = None,
    interpolation: str = "nearest",
) -> np.ndarray:
    """Several images as one float32 batch (N, H, W, 3); they must share a size unless ``size``."""
    arrays = [load_image(s, size, interpolation) for s in sources]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ImageError(
            f"images of different sizes {sorted(shapes)} cannot form one batch; pass size=(H, W)"
        )
    return np.stack(arrays)
