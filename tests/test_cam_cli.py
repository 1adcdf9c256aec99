"""The ``convlens cam`` command, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import convlens as cl
from convlens.cli import main

from .conftest import save_exported, tiny_convnet


@pytest.fixture
def files(tmp_path):
    model_path = tmp_path / "tiny.pt2"
    save_exported(tiny_convnet(), model_path)
    rng = np.random.default_rng(0)
    images = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(path)
        images.append(str(path))
    return model_path, images


def test_cam_command_writes_overlays_raw_maps_and_summary(files, tmp_path, capsys):
    model_path, images = files
    out = tmp_path / "out"
    code = main([
        "cam", *images, "--model", str(model_path), "--preprocess", "unit",
        "--input-size", "32", "--method", "gradcam", "scorecam", "--target", "top-2",
        "--top-k", "4", "--metrics", "--steps", "4", "--out", str(out), "-q",
    ])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["methods"] == ["gradcam", "scorecam"]
    rows = summary["results"]
    assert len(rows) == 2 * 2 * 2  # methods x images x classes
    model = cl.load_model(tiny_convnet(), input_size=(32, 32), preprocess="unit")
    pixels = np.stack([cl.load_image(p, size=(32, 32)) for p in images])
    expected = model.cam(pixels, target="top-2")
    gradcam = [r for r in rows if r["method"] == "gradcam"]
    assert [r["target"] for r in gradcam] == expected.target
    for row, entry in enumerate(gradcam):
        overlay = np.asarray(Image.open(out / entry["overlay"]))
        assert overlay.shape == (32, 32, 3)
        raw = np.load(out / entry["raw"])
        np.testing.assert_allclose(raw, expected.raw[row], rtol=1e-5, atol=1e-6)
        assert entry["box"] == list(expected.boxes[row]) and entry["layers"] == ["4"]
        assert set(entry["metrics"]) == {"deletion", "insertion", "drop", "increase"}
    printed = capsys.readouterr().out
    assert "Faithfulness" in printed and "8 overlay(s)" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics) == 8


def test_cam_command_on_the_default_model_draws_the_box(tmp_path):
    out = tmp_path / "out"
    assert main(["cam", "coffee", "--target", "espresso", "--out", str(out), "-q"]) == 0
    entry = json.loads((out / "summary.json").read_text())["results"][0]
    assert entry["name"] == "espresso" and entry["target"] == 967
    assert entry["overlay"] == "coffee_gradcam_espresso.png"
    x0, y0, _, y1 = entry["box"]
    picture = np.asarray(Image.open(out / entry["overlay"]))
    assert (picture[y0 + 20 : y1 - 20, x0] == 255).all()  # the white box's left edge
    assert np.load(out / "coffee_gradcam_espresso.npy").shape == (7, 7)


def test_cam_command_errors_are_one_line(files, tmp_path, capsys):
    model_path, images = files
    common = ["--model", str(model_path), "--input-size", "32", "--out", str(tmp_path / "o"), "-q"]
    assert main(["cam", images[0], "--method", "gradcm", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convlens: error: unknown CAM method 'gradcm'") and "\n" not in err
    assert main(["cam", images[0], "--layer", "7", *common]) == 2
    assert "CAM needs a spatial" in capsys.readouterr().err
    assert main(["cam", images[0], "--target", "9", *common]) == 2
    assert "out of range" in capsys.readouterr().err
