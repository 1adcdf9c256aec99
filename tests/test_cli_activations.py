"""The `layers` and `activations` commands, end to end on a model file."""

from __future__ import annotations

import csv

import numpy as np
import torch
from PIL import Image

from convlens.cli import main

from .conftest import tiny_convnet


def test_layers_command_lists_the_default_model(capsys):
    assert main(["layers", "--kind", "conv"]) == 0
    out = capsys.readouterr().out
    assert "_conv_stem" in out and "_conv_head" in out and "_bn0" not in out


def test_activations_command_writes_grids_and_empty_table(tmp_path, capsys):
    model_path = tmp_path / "tiny.pt"
    net = tiny_convnet()
    with torch.no_grad():
        net[3].weight[5].zero_()  # channel 5 of the second conv never fires
        net[3].bias[5] = -1.0
    torch.save(net, model_path)  # a pickled module: needs --trust-model-file
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    code = main([
        "activations", str(image), "--model", str(model_path), "--preprocess", "unit",
        "--input-size", "32", "--layers", "1", "4", "--out", str(out), "-q", "--trust-model-file",
    ])
    assert code == 0
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["000_1.png", "001_4.png"]
    grid = np.asarray(Image.open(out / "001_4.png"))
    assert grid.shape == (16, 16 * 17 - 1, 3)  # 16 channels of 16x16: one row
    rows = list(csv.DictReader((out / "empty_channels.csv").open()))
    assert rows[1]["layer"] == "4" and "5" in rows[1]["channels"].split()
    assert np.all(grid[:, 5 * 17 : 5 * 17 + 16] == grid[0, 5 * 17])  # the empty cell is flat
    dead = sum(len(row["channels"].split()) for row in rows)
    assert f"{dead} of 24 channels never fire" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["activations", str(tmp_path / "missing.jpg"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convlens: error: image file not found") and "\n" not in err
    assert main(["activations", "chelsea", "--layers", "_conv_stme", "--out", str(tmp_path)]) == 2
    assert "Did you mean '_conv_stem'" in capsys.readouterr().err
