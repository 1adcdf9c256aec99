"""The channel atlas of a scan folder (`convlens report --scan`), and the digits demo."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import convlens as cl
from convlens.cli import main
from convlens.scan import scan

from .test_scan import dead_channel_model, write_folder


@pytest.mark.filterwarnings("ignore:Grad-CAM map is all zero")
def test_atlas_pages(tmp_path, one_thread, capsys):
    root = tmp_path / "data"
    write_folder(root, per_class=8)
    result = scan(dead_channel_model(), root, tmp_path / "scan", top_k=3)
    assert main(["report", "--scan", str(result.folder), "--out", str(tmp_path / "atlas")]) == 0
    assert "atlas:" in capsys.readouterr().out
    index = (tmp_path / "atlas" / "index.html").read_text()
    for n, layer in enumerate(result.layers):  # one page per layer, linked
        assert f'href="layers/{n:03d}.html"' in index
        page = (tmp_path / "atlas" / "layers" / f"{n:03d}.html").read_text()
        assert page.count(' id="c') == (result.channels["layer"] == layer).sum()
    assert "broken.png" in index  # the skipped file is listed
    assert f"Mistakes ({len(result.mistakes())}" in index
    # the census says what channels.parquet says
    dead = result.dead_channels()
    assert f"{len(dead['0'])} dead" in index
    # each strip: k patches of 64 px with 2 px gaps, cropped from the top images' boxes
    strip = Image.open(tmp_path / "atlas" / "layers" / "000" / "0.jpg")
    assert strip.size == (3 * 66 - 2, 64)
    top = result.top_images("0", 0).iloc[0]
    image = cl.load_image(top["path"], size=(32, 32))
    crop = image[top["y0"]:top["y1"] + 1, top["x0"]:top["x1"] + 1]
    expected = cl.load_image(Image.fromarray(crop.astype(np.uint8)), size=(64, 64))
    got = np.asarray(strip, np.float32)[:, :64]
    assert np.abs(got - expected).mean() < 12  # JPEG of the same patch


def test_digits_demo_and_its_cams(tmp_path, one_thread):
    """The shipped digits convnet: it learned the digits, and the scan's fused Grad-CAMs (one
    pass with the statistics) equal model.cam's, class by class and mistake by mistake."""
    from convlens.scan.demo import digits_model, write_digits

    root = write_digits(tmp_path / "digits", count=60)
    model = digits_model()
    result = scan(model, root, tmp_path / "scan", top_k=2, batch_size=16)
    assert result.class_names == [str(d) for d in range(10)]
    assert len(result.images) == 60
    assert result.accuracy > 0.8  # the shipped weights learned the digits
    images = result.images
    for digit in (3, 8):
        paths = images[images["label"] == digit]["path"].tolist()
        expected = model.cam(paths, target=digit).heatmap.mean(axis=0)
        assert expected.max() > 0.1
        np.testing.assert_allclose(result.class_mean_cam(str(digit)), expected, atol=1e-5)
    assert result.mistakes()  # three of these 60 digits are misread
    for mistake in result.mistakes():
        cams = model.cam([mistake["path"]] * 2, target=[mistake["label"], mistake["prediction"]])
        np.testing.assert_allclose(mistake["cam_true"], cams.heatmap[0], atol=1 / 255 + 1e-6)
        np.testing.assert_allclose(mistake["cam_predicted"], cams.heatmap[1], atol=1 / 255 + 1e-6)
