"""The HTML report: its facts are the model's, its page is one self-contained file."""

from __future__ import annotations

import base64
import io
import json
import re
from importlib import metadata

import numpy as np
import pytest
import torch
from PIL import Image

import convlens as cl
from convlens.activations import activation_grid
from convlens.cli import main
from convlens.errors import ModelError
from convlens.render import grid_png
from convlens.report import ReportOptions, build_report, image_label
from convlens.report.sections import filter_layers

from .conftest import tiny_convnet

QUICK = dict(metric_steps=3, filter_steps=2, filter_channels=4, filter_size=32, progress=False)


@pytest.fixture(scope="module")
def tiny() -> cl.Model:
    return cl.load_model(tiny_convnet(), input_size=(32, 32), preprocess="unit", name="tiny")


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.uniform(0, 255, (32, 32, 3)).astype(np.float32) for _ in range(2)]


@pytest.fixture(scope="module")
def report(tiny, photos):
    options = ReportOptions(cam_methods=["gradcam", "eigencam", "scorecam"], cam_classes=2,
                            activation_images="all", filter_layers=2, **QUICK)
    return build_report(tiny, photos, options)


def _data_uris(html: str) -> list[bytes]:
    found = re.findall(r'src="data:image/[a-z]+;base64,([^"]+)"', html)
    return [base64.b64decode(b) for b in found]


def test_model_facts_and_predictions_are_the_models(report, tiny, photos):
    facts = report.facts
    assert facts["model"]["name"] == "tiny"
    assert facts["model"]["parameters"] == sum(p.numel() for p in tiny.network.parameters())
    assert [row["name"] for row in facts["model"]["layers"]] == [i.name for i in tiny.layers()]
    assert facts["model"]["layers"][0]["output_shape"] == [32, 32, 8]
    expected = tiny.predict(np.stack(photos), top=3)
    for image, answer in zip(facts["images"], expected):
        assert [p["index"] for p in image["predictions"]] == [p.index for p in answer]
        assert [p["probability"] for p in image["predictions"]] == pytest.approx(
            [p.probability for p in answer], abs=1e-5
        )


def test_cam_section_has_top_classes_and_every_method(report):
    for image in report.facts["images"]:
        classes = image["cam"]["classes"]
        assert [c["target"] for c in classes] == [p["index"] for p in image["predictions"][:2]]
        assert [m["method"] for m in image["cam"]["methods"]] == ["gradcam", "eigencam", "scorecam"]
        for entry in image["cam"]["methods"]:
            assert entry["target"] == image["predictions"][0]["index"]
            assert 0.0 <= entry["deletion"] <= 1.0 and 0.0 <= entry["insertion"] <= 1.0
        x0, y0, x1, y1 = classes[0]["box"]
        assert 0 <= x0 <= x1 < 32 and 0 <= y0 <= y1 < 32


def test_activation_grids_and_empty_channels_match_the_activations(report, tiny, photos):
    section = report.facts["activations"]
    assert section["images"] == ["image 1", "image 2"]
    assert [layer["name"] for layer in section["layers"]] == [i.name for i in tiny.resolve(None)]
    per_image = [tiny.activations(photo) for photo in photos]  # as the report runs them
    for layer in section["layers"]:
        a = np.concatenate([acts[layer["name"]] for acts in per_image])
        for n, grid in enumerate(layer["grids"]):
            assert report.pictures[grid["picture"]] == grid_png(activation_grid(a[n]))
            assert layer["empty"][grid["image"]] == int((~a[n].any(axis=(0, 1))).sum())
        assert layer["empty_all"] == int((~a.any(axis=(0, 1, 2))).sum())


def test_filters_section_draws_evenly_spaced_conv_layers(report, tiny):
    layers = report.facts["filters"]["layers"]
    assert [f["layer"] for f in layers] == ["0", "3"]  # the first and the last conv
    for entry in layers:
        picture = Image.open(io.BytesIO(report.pictures[entry["picture"]]))
        h, w = entry["size"]
        assert entry["channels"] == [0, 1, 2, 3]
        assert picture.size == (4 * w + 3 * 5, h)  # 4 filters in a row, 5 px margins
        assert len(entry["quality"]) == 4


def test_filter_layers_spread_from_shallow_to_deep(default_model):
    picked = filter_layers(default_model, ReportOptions(filter_layers=4))
    convs = [i for i in default_model.resolve("conv") if i.spatial]
    assert picked[0] == convs[0] and picked[-1] == convs[-1] and len(picked) == 4
    assert [i.order for i in picked] == sorted(i.order for i in picked)


def test_html_is_self_contained(report, tmp_path):
    path = report.save(tmp_path, write_json=True)
    html = path.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(?!data:|#)', html), "every link is inline or in-page"
    assert "http://" not in html and "https://" not in html and "@import" not in html
    blobs = _data_uris(html)
    keys = set(report.pictures)
    assert len(blobs) == len(keys)
    for blob in blobs:
        Image.open(io.BytesIO(blob)).verify()
    grid = re.search(r'<img class="grid[^>]*>', html).group(0)
    assert 'data-per-row="8"' in grid and 'data-cell-w="32"' in grid and 'data-channels="8"' in grid


def test_json_holds_the_same_facts_without_pictures(report, tmp_path):
    report.save(tmp_path, write_json=True)
    facts = json.loads((tmp_path / "report.json").read_text())
    assert "picture" not in json.dumps(facts)
    assert facts["images"][0]["predictions"] == report.facts["images"][0]["predictions"]
    assert set(facts["run"]["timings"]) >= {"model", "predictions", "cam", "activations",
                                            "filters", "html"}
    assert facts["run"]["versions"]["torch"] == metadata.version("torch")
    assert facts["run"]["device"] == "cpu"


def test_options_are_checked():
    with pytest.raises(ModelError, match="activation_images"):
        ReportOptions(activation_images="some")
    with pytest.raises(ModelError, match="unknown CAM method 'gradcan'"):
        build_report(cl.load_model(tiny_convnet(), input_size=(32, 32)), [np.zeros((32, 32, 3))],
                     ReportOptions(cam_methods=["gradcan"], progress=False))


def test_image_labels():
    assert image_label("chelsea", 0) == "chelsea"
    assert image_label("sample:coffee", 1) == "coffee"
    assert image_label("/photos/dog.jpg", 2) == "dog.jpg"
    assert image_label(np.zeros((2, 2, 3)), 3) == "image 4"


def test_cli_report_writes_html_and_json(tmp_path, capsys):
    model_file = tmp_path / "tiny.pt"
    torch.save(tiny_convnet(), model_file)
    image = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (40, 40, 3), np.uint8)).save(image)
    out = tmp_path / "report"
    code = main([
        "report", str(image), "--model", str(model_file), "--input-size", "32",
        "--preprocess", "unit", "--out", str(out), "--json", "--quiet", "--methods", "gradcam",
        "--cam-classes", "1", "--metric-steps", "2", "--filters", "none",
    ])
    assert code == 0
    printed = capsys.readouterr().out
    assert f"open:   {(out / 'index.html').resolve().as_uri()}" in printed
    facts = json.loads((out / "report.json").read_text())
    assert facts["images"][0]["name"] == "noise.png"
    assert facts["filters"]["layers"] == []
    assert "Filters</h2>" not in (out / "index.html").read_text()


def test_cli_report_errors_are_one_line(tmp_path, capsys):
    code = main(["report", str(tmp_path / "missing.jpg"), "--out", str(tmp_path), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convlens: error: image file not found") and "\n" not in err
