"""Fuzzing the image loader: mutated PNG/JPEG/GIF/WebP/BMP bytes give an image or an ImageError."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import convlens as cl
from convlens.errors import ImageError

FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP")


def _encode(fmt: str) -> bytes:
    rng = np.random.default_rng(len(fmt))
    pixels = rng.integers(0, 256, (12, 16, 3), np.uint8)
    image = Image.fromarray(pixels)
    if fmt == "GIF":
        image = image.convert("P")
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


SEEDS = {fmt: _encode(fmt) for fmt in FORMATS}


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(FORMATS))])
    for _ in range(draw(st.integers(0, 8))):
        position = draw(st.integers(0, len(data) - 1))
        data[position] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):  # a header field (sizes live in the first bytes) set to extremes
        position = draw(st.integers(0, min(40, len(data) - 1))) if data else 0
        data[position : position + 2] = draw(st.sampled_from([b"\xff\xff", b"\x00\x00", b"\x7f"]))
    return bytes(data)


@settings(max_examples=400, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=mutated(), size=st.sampled_from([None, (8, 8), (5, 9)]))
def test_mutated_images_load_or_raise_image_error(data, size):
    try:
        image = cl.load_image(data, size=size)
    except ImageError as err:
        assert "\n" not in str(err)
        return
    assert isinstance(image, np.ndarray) and image.dtype == np.float32
    assert image.ndim == 3 and image.shape[2] == 3
    if size is not None:
        assert image.shape[:2] == size
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 255


def test_the_seeds_themselves_load():
    for fmt, data in SEEDS.items():
        assert cl.load_image(data).shape == (12, 16, 3), fmt
