"""Colormaps, PNG output, overlays and annotations."""

from __future__ import annotations

import io

import matplotlib
import numpy as np
import pytest
from PIL import Image

from convlens.render import (
    colorize,
    colormap_lut,
    draw_box,
    draw_label,
    overlay,
    save_png,
    to_png_bytes,
    upscale_nearest,
)


@pytest.mark.parametrize("name", ["viridis", "jet", "gray", "tab10"])
def test_colorize_uint8_matches_matplotlib(name):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    rgb = colorize(gray, name)
    assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
    cm = matplotlib.colormaps[name].resampled(256)
    np.testing.assert_array_equal(rgb, cm(gray, bytes=True)[..., :3])
    np.testing.assert_array_equal(colormap_lut(name), rgb.reshape(256, 3))


def test_colorize_floats_and_endpoints_match_matplotlib():
    cm = matplotlib.colormaps["viridis"]
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 1.2, size=(7, 9)).astype(np.float32)
    x[0, :4] = [0.0, 1.0, np.nan, 254.5 / 256]
    np.testing.assert_array_equal(colorize(x), cm(x, bytes=True)[..., :3])
    np.testing.assert_array_equal(colorize(x.astype(np.float64)), cm(x, bytes=True)[..., :3])
    np.testing.assert_array_equal(colorize(np.array([[0.0, 1.0]]))[0, 0], cm(0.0, bytes=True)[:3])
    np.testing.assert_array_equal(colorize(np.array([[0.0, 1.0]]))[0, 1], cm(1.0, bytes=True)[:3])
    np.testing.assert_array_equal(
        colorize(np.array([[0, 255]], np.uint8)), colorize(np.array([[0.0, 1.0]]))
    )


def test_colorize_unknown_cmap():
    with pytest.raises(ValueError, match="colormap"):
        colorize(np.zeros((2, 2), np.uint8), "no-such-map")


def test_overlay_formula_by_hand():
    jet = matplotlib.colormaps["jet"](np.arange(256), bytes=True)[:, :3].astype(np.float64)
    image = np.array([[[100, 100, 100], [250, 250, 250]], [[0, 10, 20], [5, 5, 5]]], np.uint8)
    heat = np.array([[0.0, 1.0], [0.5, 0.25]])
    out = overlay(image, heat)
    assert out.shape == (2, 2, 3) and out.dtype == np.uint8
    # heatmap 0 -> jet dark blue (0, 0, 127): 100 + 0.4 * 127 = 150.8 -> 150
    np.testing.assert_array_equal(out[0, 0], [100, 100, 150])
    # heatmap 1 -> jet dark red (127, 0, 0): 250 + 50.8 clips to 255
    np.testing.assert_array_equal(out[0, 1], [255, 250, 250])
    idx = (255 * heat).astype(np.uint8)
    expected = np.clip(image + 0.4 * jet[idx], 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(overlay(image.astype(np.float32), heat), expected)


def test_overlay_resizes_and_accepts_gray():
    image = np.full((28, 21), 40, np.uint8)
    out = overlay(image, np.full((7, 7), 0.5), alpha=0.5)
    assert out.shape == (28, 21, 3)
    expected = overlay(np.full((1, 1, 3), 40, np.uint8), np.full((1, 1), 0.5), alpha=0.5)
    assert (out == expected[0, 0]).all()
    ramp = overlay(np.zeros((8, 8, 3)), np.array([[0.0, 1.0]]))
    assert ramp.shape == (8, 8, 3)
    assert ramp[0, 0, 2] > ramp[0, 0, 0] and ramp[0, 7, 0] > ramp[0, 7, 2]


def test_draw_box_touches_the_right_pixels():
    image = np.zeros((20, 20, 3), np.uint8)
    out = draw_box(image, (5, 5, 14, 14), color=(255, 0, 0), width=2)
    ring = np.zeros((20, 20), bool)
    ring[5:15, 5:15] = True
    ring[7:13, 7:13] = False
    np.testing.assert_array_equal(out[..., 0] == 255, ring)
    assert not out[..., 1:].any()
    assert not image.any()  # the input is not modified


def test_draw_label():
    image = np.full((40, 120), 128, np.uint8)
    out = draw_label(image, "cat 0.93")
    assert out.shape == (40, 120, 3) and out.dtype == np.uint8
    assert (out[:12, :50] > 200).any() and (out[:12, :50] == 0).any()  # anti-aliased text
    assert (out[30:, 100:] == 128).all()
    plain = draw_label(image, "x", xy=(60, 20), background=None)
    assert (plain[:20] == 128).all() and (plain[20:] > 200).any()


def test_png_roundtrip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    path = save_png(rgb, tmp_path / "a" / "b" / "x.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), rgb)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(to_png_bytes(gray)))), gray)
    with pytest.raises(ValueError):
        to_png_bytes(rgb / 255.0)


def test_upscale_nearest():
    img = np.array([[1, 2], [3, 4]], np.uint8)
    big = upscale_nearest(img, 3)
    assert big.shape == (6, 6)
    np.testing.assert_array_equal(big[:3, :3], 1)
    np.testing.assert_array_equal(big[3:, 3:], 4)
    rgb = upscale_nearest(np.dstack([img, img, img]), 2)
    assert rgb.shape == (4, 4, 3) and rgb[3, 0, 2] == 3
    with pytest.raises(ValueError):
        upscale_nearest(img, 0)
