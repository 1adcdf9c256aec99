"""The pixel cap, reduced JPEG decoding, and checks of pixel values (NaN, floats in 0..1)."""

from __future__ import annotations

import io
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import convlens as cl
from convlens import images
from convlens.errors import ImageError
from convlens.images import PixelRangeWarning


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header says ``width`` x ``height`` (as a decompression bomb's does)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IHDR")
    data[start + 4 : start + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[start : start + 17]))
    data[start + 17 : start + 21] = struct.pack(">I", crc)
    return bytes(data)


@pytest.mark.parametrize("side", [13_000, 30_000])  # over our cap; over Pillow's bomb limit too
def test_a_huge_image_is_refused_from_its_header(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(side, side))
    with pytest.raises(ImageError, match="Mpx") as err:
        cl.load_image(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ImageError, match="Mpx"):
        cl.load_image(path.read_bytes(), size=(224, 224))


def test_the_cap_is_configurable(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    Image.new("RGB", (100, 80)).save(path)
    assert cl.load_image(path).shape == (80, 100, 3)
    with pytest.raises(ImageError, match=r"100×80 .* limit of 0.005 Mpx"):
        cl.load_image(path, max_pixels=5_000)
    monkeypatch.setattr(images, "MAX_PIXELS", 5_000)
    with pytest.raises(ImageError, match="limit"):
        cl.load_image(path)
    assert cl.load_image(path, max_pixels=0).shape == (80, 100, 3)  # 0: no limit
    monkeypatch.setattr(images, "MAX_PIXELS", 40_000_000)
    monkeypatch.setenv("CONVLENS_MAX_PIXELS", "7999")
    with pytest.raises(ImageError, match="limit"):
        cl.load_image(Image.open(path))
    monkeypatch.setenv("CONVLENS_MAX_PIXELS", "lots")
    with pytest.raises(ImageError, match="CONVLENS_MAX_PIXELS='lots' is not a number"):
        cl.load_image(path)


def test_pillow_errors_never_escape(tmp_path):
    path = tmp_path / "cut.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[:60])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        cl.load_image(path)
    with pytest.raises(ImageError, match="not an image"):
        cl.load_image(b"hello")


def _jpeg(width: int, height: int) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def test_a_large_jpeg_read_at_a_size_is_decoded_reduced():
    data = _jpeg(2400, 2400)  # 5.8 Mpx: over DRAFT_PIXELS
    tracemalloc.start()
    try:
        small = cl.load_image(data, size=(224, 224))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert small.shape == (224, 224, 3) and small.dtype == np.float32
    # the full image as float32 alone would be 69 MB; reduced by 8 it is 300 x 300 x 3 bytes
    assert peak < 4 * 2**20
    full = cl.load_image(data)
    assert full.shape == (2400, 2400, 3)
    reference = cl.images.resize(full, (224, 224), "bilinear")
    reduced = cl.load_image(data, size=(224, 224), interpolation="bilinear")
    assert np.abs(reduced - reference).mean() < 3


def test_resizing_in_pillow_gives_the_same_pixels_as_before(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    for interpolation in ("nearest", "bilinear"):
        expected = images.resize(pixels.astype(np.float32), (90, 70), interpolation)
        np.testing.assert_array_equal(cl.load_image(path, (90, 70), interpolation), expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_pixels_are_one_line_errors(tiny_model, bad):
    image = np.full((32, 32, 3), 100.0, np.float32)
    image[3, 4, 1] = bad
    with pytest.raises(ImageError, match="NaN or infinite"):
        cl.load_image(image)
    with pytest.raises(ImageError, match="NaN or infinite"):
        tiny_model.cam(torch.from_numpy(image))
    with pytest.raises(ImageError, match="NaN or infinite"):
        tiny_model.predict(image[None])
    with pytest.raises(ImageError, match="NaN or infinite"):
        tiny_model.activations(np.full((32, 32, 3), np.nan, np.float32))


def test_float_pixels_in_0_1_warn(tiny_model):
    unit = np.random.default_rng(1).uniform(0, 1, (32, 32, 3)).astype(np.float32)
    with pytest.warns(PixelRangeWarning, match="multiply it by 255"):
        cl.load_image(unit)
    with pytest.warns(PixelRangeWarning):
        tiny_model.predict(torch.from_numpy(unit))
    with pytest.warns(PixelRangeWarning):
        tiny_model.activations(unit[None])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PixelRangeWarning)
        cl.load_image(unit * 255)  # 0..255 floats
        cl.load_image((unit > 0.5).astype(np.uint8))  # integers are pixels whatever their range
        cl.load_image(np.zeros((4, 4, 3), np.float32))  # black is black
        tiny_model.predict(torch.from_numpy(unit * 255))


def test_filters_work_inside_no_grad(tiny_model):
    with torch.no_grad():
        result = tiny_model.filters("3", channels=[0, 1], steps=2, size=32, progress=False)
        assert not torch.is_grad_enabled()  # the caller's mode is back
    assert result.images.shape[0] == 2 and np.isfinite(result.activation).all()


@pytest.mark.parametrize("size", [(0, 5), (-1, 3), (1.5, 2), "ab", (3,)])
def test_a_bad_size_is_a_one_line_error(size):
    with pytest.raises(ImageError, match="size must be"):
        cl.load_image("chelsea", size=size)
