"""Blank ("empty") channels per layer."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch

from convlens.activations import (
    EmptyChannels,
    empty_channels,
    empty_channels_table,
    write_csv,
    write_json,
)


@pytest.fixture
def acts():
    rng = np.random.default_rng(0)
    a = np.maximum(rng.standard_normal((3, 5, 5, 8)), 0).astype(np.float32) + 0.01
    a[..., [1, 6]] = 0  # empty on all images
    a[0, ..., 2] = 0  # empty on image 0 only
    b = np.ones((3, 2, 2, 4), np.float32)
    return {"conv1": a, "conv2": b}


def test_empty_channels(acts):
    result = empty_channels(acts)
    assert [r.layer for r in result] == ["conv1", "conv2"]
    assert result[0] == EmptyChannels("conv1", (1, 6), 8)
    assert result[1] == EmptyChannels("conv2", (), 4)
    assert result[0].empty == 2 and result[0].fraction == 0.25
    assert all(isinstance(c, int) for c in result[0].channels)


def test_frozen():
    row = EmptyChannels("x", (1,), 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.total = 4  # type: ignore[misc]


def test_torch_single_image_and_bad_shape():
    a = np.zeros((4, 4, 3), np.float32)
    a[..., 0] = 1
    assert empty_channels({"t": torch.from_numpy(a[None])})[0].channels == (1, 2)
    assert empty_channels({"hwc": a})[0].channels == (1, 2)
    with pytest.raises(ValueError, match="'bad'"):
        empty_channels({"bad": np.zeros((4, 4))})


def test_nan_is_not_empty():
    a = np.zeros((1, 2, 2, 2), np.float32)
    a[0, 0, 0, 1] = np.nan
    assert empty_channels({"l": a})[0].channels == (0,)


def test_table_and_writers(acts, tmp_path):
    rows = empty_channels_table(empty_channels(acts))
    assert rows[0] == {
        "layer": "conv1",
        "channels": [1, 6],
        "empty": 2,
        "total": 8,
        "fraction": 0.25,
    }
    assert rows[1]["channels"] == [] and rows[1]["fraction"] == 0.0

    json_path = write_json(rows, tmp_path / "deep" / "empty.json")
    assert json.loads(json_path.read_text()) == rows

    csv_path = write_csv(empty_channels(acts), tmp_path / "deeper" / "empty.csv")
    with csv_path.open(newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == ["layer", "channels", "empty", "total", "fraction"]
    assert read[0]["channels"] == "1 6" and read[0]["empty"] == "2"
    assert read[1]["channels"] == ""
