"""``convlens filters``: channel syntax, the grid PNG, its JSON, the summary line, errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlens.cli import main
from convlens.cli.filters import parse_channels

from .conftest import save_exported, tiny_convnet

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def model_file(tmp_path: Path) -> str:
    return save_exported(tiny_convnet(), tmp_path / "tiny.pt2")


def _args(model_file: str, out: Path, *extra: str) -> list[str]:
    return ["filters", "--model", model_file, "--preprocess", "unit", "--input-size", "32",
            "--out", str(out), "-q", *extra]


@pytest.mark.parametrize(("text", "expected"), [
    ("0:4", [0, 1, 2, 3]), ("0:16:4", [0, 4, 8, 12]), ("3,7,9", [3, 7, 9]), ("5", [5]),
])
def test_channel_syntax(text: str, expected: list[int]) -> None:
    assert parse_channels(text) == expected


@pytest.mark.parametrize("text", ["a:b", "4:2", "1:2:3:4", "-3", ""])
def test_bad_channel_syntax(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_channels(text)


def test_writes_grid_and_json(model_file: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid.png"
    code = main(_args(model_file, out, "--layer", "3", "--channels", "0:10", "--steps", "3",
                      "--size", "40"))
    assert code == 0
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 * 30 + 5, 8 * 30 + 7 * 5, 3)  # 40 px - 2 x 5 px crop, 8 per row
    table = json.loads(out.with_suffix(".json").read_text())
    assert table["layer"] == "3" and table["recipe"] == "chollet"
    assert [row["channel"] for row in table["channels"]] == list(range(10))
    assert all(isinstance(row["activation"], float) for row in table["channels"])
    line = capsys.readouterr().out
    assert "10 filters of 3 (chollet)" in line and "grid.png" in line


def test_lucid_recipe_and_seed(model_file: str, tmp_path: Path) -> None:
    outs = [tmp_path / f"{name}.png" for name in ("a", "b", "c")]
    for out, seed in zip(outs, (1, 1, 2)):
        assert main(_args(model_file, out, "--layer", "0", "--channels", "2,5", "--recipe",
                          "lucid", "--steps", "4", "--size", "24", "--seed", str(seed))) == 0
    a, b, c = (np.asarray(Image.open(out)) for out in outs)
    assert a.shape == (24, 2 * 24 + 5, 3)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_errors_are_one_line(model_file: str, tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid.png"
    assert main(_args(model_file, out, "--layer", "nope")) == 2
    assert "no layer named 'nope'" in capsys.readouterr().err
    assert main(_args(model_file, out, "--layer", "0", "--channels", "0:9")) == 2
    assert "channel 8 is out of range" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_args(model_file, out, "--layer", "0", "--channels", "x"))
    assert not out.exists()
