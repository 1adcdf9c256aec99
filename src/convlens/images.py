"""Reading images into float32 RGB arrays, and the bundled sample photos.

Everything here returns ``float32`` arrays of shape ``(H, W, 3)`` with values in 0..255: the same
pixels as ``keras.utils.load_img`` + ``img_to_array`` (nearest-neighbour resizing by default).

Image files are checked before they are decoded: more than :data:`MAX_PIXELS` pixels (40 Mpx;
``max_pixels=``, or the ``CONVLENS_MAX_PIXELS`` environment variable; 0 = no limit) is an
:class:`ImageError`. A JPEG of more than :data:`DRAFT_PIXELS` read at a known size is decoded
reduced (Pillow's ``draft``, by 1/2, 1/4 or 1/8, never below that size), so a 36 Mpx photo read
at 224x224 costs about 1 MB instead of about 0.5 GB.

Pixel arrays are checked too: NaN or infinite values are an :class:`ImageError`; a float array
whose values all lie in 0..1 gets a :class:`PixelRangeWarning` (once): convlens reads pixels as
0..255 and does not guess, so multiply such an image by 255.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import IO, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

ImageLike = str | os.PathLike | Image.Image | np.ndarray | bytes

#: The most pixels (width x height) an image file may have; checked from its header.
MAX_PIXELS = 40_000_000
#: The environment variable that overrides :data:`MAX_PIXELS` (0: no limit).
MAX_PIXELS_ENV = "CONVLENS_MAX_PIXELS"
#: JPEGs with more pixels than this, read at a known size, are decoded reduced (``draft``).
DRAFT_PIXELS = 4_000_000


class PixelRangeWarning(UserWarning):
    """A float image whose values all lie in 0..1, given where 0..255 pixels are expected."""

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


def check_pixels(pixels: np.ndarray | Any, what: str = "the image") -> None:
    """Raise for NaN / infinite values; warn (once) for a float image in 0..1 (see the module).

    ``pixels`` is a NumPy array or a torch tensor; integer arrays are not checked (always valid).
    """
    dtype = pixels.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind != "f" or pixels.size == 0:
            return
        lo, hi = float(pixels.min()), float(pixels.max())
    else:  # a torch tensor: one pass on its device
        if not dtype.is_floating_point or pixels.numel() == 0:
            return
        lo, hi = (float(v) for v in pixels.aminmax())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ImageError(
            f"{what} has NaN or infinite pixel values; replace them first "
            "(e.g. np.nan_to_num(image)) or check the code that made it"
        )
    if lo >= 0.0 and 0.0 < hi <= 1.0:
        warnings.warn(
            f"{what} is a float array with values in 0..1, but convlens reads pixels as 0..255 "
            "(it would look nearly black to the model); multiply it by 255",
            PixelRangeWarning,
            stacklevel=2,
        )


def _as_rgb_array(arr: np.ndarray) -> np.ndarray:
    """Any 2-D / 3-D numeric array → float32 (H, W, 3) in 0..255."""
    check_pixels(arr)
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
    *,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Read an image as float32 (H, W, 3) RGB in 0..255.

    ``source`` is a path, a sample name (``"chelsea"``, or ``"sample:chelsea"``), the bytes of an
    image file, a PIL image or an array. Grayscale, palette, RGBA and 16-bit images are converted.
    ``size`` is (height, width) or one int for a square; resizing uses ``interpolation`` (Keras's
    default, nearest). Files and PIL images of more than ``max_pixels`` pixels (default
    :func:`pixel_limit`) are refused before they are decoded.
    """
    size = _target_size(size)
    if isinstance(source, np.ndarray):
        arr = _as_rgb_array(source)
    elif isinstance(source, Image.Image):
        check_size(source.width, source.height, "the image", max_pixels)
        arr = _decode(source, size, interpolation)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        with open_image(io.BytesIO(source), "the image", max_pixels) as img:
            arr = _decode(img, size, interpolation)
    elif isinstance(source, (str, os.PathLike)):
        arr = _read_file(source, size, interpolation, max_pixels)
    else:
        raise ImageError(
            f"cannot read an image from a {type(source).__name__}; "
            "pass a file path, a sample name, image bytes, a PIL image or a NumPy array"
        )
    if size is not None:
        arr = resize(arr, size, interpolation)
    return arr


def _target_size(size: tuple[int, int] | int | None) -> tuple[int, int] | None:
    """``size`` as (height, width) of positive ints, or None; anything else is an ImageError."""
    if size is None:
        return None
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    try:
        h, w = pair  # type: ignore[misc]
        if int(h) != h or int(w) != w or h < 1 or w < 1:
            raise ValueError
        return int(h), int(w)
    except (TypeError, ValueError):
        raise ImageError(
            f"size must be (height, width) in whole pixels of at least 1, or one int; not {size!r}"
        ) from None


def pixel_limit(max_pixels: int | None = None) -> int:
    """The pixel cap in force: ``max_pixels``, else ``$CONVLENS_MAX_PIXELS``, else MAX_PIXELS."""
    if max_pixels is not None:
        return int(max_pixels)
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return MAX_PIXELS
    try:
        return int(float(text.replace("_", "")))
    except ValueError:
        raise ImageError(
            f"{MAX_PIXELS_ENV}={text!r} is not a number; set it to a pixel count such as "
            "40000000 (0: no limit)"
        ) from None


def check_size(width: int, height: int, what: str, max_pixels: int | None = None) -> None:
    """Raise :class:`ImageError` if a ``width`` x ``height`` image is over the pixel cap."""
    limit = pixel_limit(max_pixels)
    if limit > 0 and width * height > limit:
        raise ImageError(
            f"{what} is {width}×{height} = {width * height / 1e6:.1f} Mpx, over the limit of "
            f"{limit / 1e6:g} Mpx; make it smaller, or raise the limit (max_pixels=, "
            f"convlens.images.MAX_PIXELS or {MAX_PIXELS_ENV})"
        )


@contextmanager
def open_image(
    source: str | os.PathLike | IO[bytes], what: str, max_pixels: int | None = None
) -> Iterator[Image.Image]:
    """Open an image file with its size checked against the pixel cap, not yet decoded.

    Every failure of Pillow (not an image, a decompression bomb, corrupt data) is an
    :class:`ImageError` naming ``what``; so is any decoding error inside the block.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our cap applies
            with Image.open(source) as img:
                check_size(img.width, img.height, what, max_pixels)
                yield img
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(
            f"{what} is not an image Pillow can read; use a JPEG, PNG, BMP, GIF, TIFF or WebP file"
        ) from None
    except Image.DecompressionBombError as err:
        found = re.search(r"\((\d+) pixels\)", str(err))
        count = f"{int(found.group(1)) / 1e6:.0f} Mpx" if found else "too many pixels"
        raise ImageError(
            f"{what} has {count}, over Pillow's limit of {Image.MAX_IMAGE_PIXELS:,} pixels "
            "(a decompression bomb?); make it smaller"
        ) from None
    except MemoryError:
        raise ImageError(f"{what} is too large to decode in memory; make it smaller") from None
    except Exception as err:  # Pillow's decoders raise many types on bad data
        detail = (str(err).strip().splitlines() or [""])[0][:200]
        raise ImageError(
            f"{what} is corrupt or truncated ({type(err).__name__}: {detail}); re-export or "
            "re-download the file"
        ) from None


def _decode(img: Image.Image, size: tuple[int, int] | None, interpolation: str) -> np.ndarray:
    """A PIL image → float32 (H, W, 3), reduced in Pillow (uint8) first when ``size`` is known."""
    if size is not None and img.mode not in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        h, w = size
        if img.format == "JPEG" and img.width * img.height > DRAFT_PIXELS:
            img.draft("RGB", (w, h))  # decode at 1/2, 1/4 or 1/8 scale, never below (w, h)
        if img.mode != "RGB":
            img = img.convert("RGB")
        if img.size != (w, h):  # the same pixels as resize() of the float array
            img = img.resize((w, h), _resample(interpolation))
    return _pil_to_array(img)


def _read_file(
    source: str | os.PathLike,
    size: tuple[int, int] | None = None,
    interpolation: str = "nearest",
    max_pixels: int | None = None,
) -> np.ndarray:
    found = _file_or_sample(source)
    if isinstance(found, str):
        return sample_image(found)
    with open_image(found, str(found), max_pixels) as img:
        return _decode(img, size, interpolation)


def _file_or_sample(source: str | os.PathLike) -> Path | str:
    """The existing image file ``source`` names, or the name of the bundled sample it names."""
    text = os.fspath(source)
    name = text.removeprefix("sample:")
    if name in SAMPLES and (text.startswith("sample:") or not os.path.exists(text)):
        return name
    path = Path(text)
    if not path.exists():
        raise ImageError(
            f"image file not found: {path} (check the path; bundled samples: {', '.join(SAMPLES)})"
        )
    if path.is_dir():
        raise ImageError(f"{path} is a folder, not an image file")
    return path


def check_image_file(source: str | os.PathLike, max_pixels: int | None = None) -> None:
    """Check, from its header only, that an image argument can be read (exists, size, format)."""
    found = _file_or_sample(source)
    if isinstance(found, Path):
        with open_image(found, str(found), max_pixels):
            pass


def load_images(
    sources: Sequence[ImageLike],
    size: tuple[int, int] | int | None = None,
    interpolation: str = "nearest",
    *,
    max_pixels: int | None = None,
) -> np.ndarray:
    """Several images as one float32 batch (N, H, W, 3); they must share a size unless ``size``."""
    arrays = [load_image(s, size, interpolation, max_pixels=max_pixels) for s in sources]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ImageError(
            f"images of different sizes {sorted(shapes)} cannot form one batch; pass size=(H, W)"
        )
    return np.stack(arrays)
