"""Reading images: conversions that must work and bad files that must fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import convlens as cl
from convlens.errors import ImageError


@pytest.fixture
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (20, 30, 3)).astype(np.uint8)


def test_rgb_png_round_trip(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = cl.load_image(tmp_path / "a.png")
    assert out.dtype == np.float32 and out.shape == (20, 30, 3)
    assert np.array_equal(out, rgb.astype(np.float32))


def test_size_is_height_width_and_nearest_by_default(tmp_path, rgb):
    Image.fromarray(rgb).save(tmp_path / "a.png")
    out = cl.load_image(tmp_path / "a.png", size=(10, 15))
    expected = np.asarray(Image.fromarray(rgb).resize((15, 10), Image.Resampling.NEAREST))
    assert out.shape == (10, 15, 3) and np.array_equal(out, expected)
    assert cl.load_image(tmp_path / "a.png", size=8).shape == (8, 8, 3)


def test_grayscale_rgba_palette_and_16bit_are_converted(tmp_path, rgb):
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / "g.png")
    out = cl.load_image(tmp_path / "g.png")
    assert out.shape == (20, 30, 3) and np.array_equal(out[..., 2], gray.astype(np.float32))

    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.array_equal(cl.load_image(tmp_path / "a.png"), rgb.astype(np.float32))

    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    assert cl.load_image(tmp_path / "p.png").shape == (20, 30, 3)

    deep = (gray.astype(np.uint16) * 257)  # 16-bit: 255 * 257 = 65535
    Image.fromarray(deep).save(tmp_path / "d.png")
    assert Image.open(tmp_path / "d.png").mode.startswith("I")
    out = cl.load_image(tmp_path / "d.png")
    np.testing.assert_allclose(out[..., 0], gray.astype(np.float32), atol=1e-3)
    assert out.max() <= 255.0


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        cl.load_image(tmp_path / "nope.jpg")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture")
    with pytest.raises(ImageError, match="not an image"):
        cl.load_image(path)


def test_truncated_jpeg(tmp_path, rgb):
    Image.fromarray(np.tile(rgb, (10, 10, 1))).save(tmp_path / "full.jpg", quality=90)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        cl.load_image(tmp_path / "cut.jpg")


def test_folder_and_wrong_types(tmp_path):
    with pytest.raises(ImageError, match="folder"):
        cl.load_image(tmp_path)
    with pytest.raises(ImageError, match="cannot read"):
        cl.load_image(3.5)
    with pytest.raises(ImageError, match=r"\(H, W"):
        cl.load_image(np.zeros((4, 4, 5)))


def test_samples():
    assert set(cl.SAMPLES) == {"chelsea", "coffee", "camera", "stereo_motorcycle"}
    cat = cl.load_image("chelsea")
    assert cat.shape == (300, 451, 3)
    assert np.array_equal(cl.load_image("sample:camera")[..., 0], cl.load_image("camera")[..., 1])
    with pytest.raises(ImageError, match="samples are"):
        cl.sample_image("astronaut")


def test_batches_need_one_size(tmp_path, rgb):
    with pytest.raises(ImageError, match="size"):
        cl.load_images([rgb, rgb[:10]])
    assert cl.load_images([rgb, rgb[:10]], size=(8, 8)).shape == (2, 8, 8, 3)
