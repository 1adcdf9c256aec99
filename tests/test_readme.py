"""Every ```python block of README.md runs, in order, in one namespace; so do its convlens lines.

The blocks run in a temporary folder holding the files they name: ``cat.jpg`` (the bundled cat
photo) and ``convnet_from_scratch_with_augmentation.keras`` (the book's convnet, as conftest
builds it). The ``convlens`` lines of the ```sh blocks run too (``make`` and ``serve`` lines are
not commands of this kind; the README says which block is run).
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convlens as cl
from convlens.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", README.read_text(), re.M | re.S)


@pytest.fixture
def readme_folder(tmp_path, monkeypatch, seed_keras_path, one_thread):
    monkeypatch.chdir(tmp_path)
    shutil.copy(seed_keras_path, tmp_path / "convnet_from_scratch_with_augmentation.keras")
    cat = cl.load_image("chelsea").astype(np.uint8)
    Image.fromarray(cat).save(tmp_path / "cat.jpg", quality=95)
    return tmp_path


def test_the_readme_has_python_and_command_examples():
    assert len(blocks("python")) >= 3
    assert any(line.startswith("convlens ") for block in blocks("sh") for line in
               block.splitlines())


def test_every_python_block_runs(readme_folder):
    namespace: dict = {"__name__": "readme"}
    for number, code in enumerate(blocks("python"), 1):
        try:
            exec(compile(code, f"README.md python block {number}", "exec"), namespace)
        except Exception as err:  # name the block in the failure
            raise AssertionError(f"README python block {number} fails: {err!r}") from err
    grid = namespace["grid"]
    assert grid.dtype == np.uint8 and grid.ndim == 2
    assert namespace["cams"].heatmap.shape == (1, 180, 180)
    assert namespace["fv"].images.shape[0] == 2


def test_every_convlens_line_runs(readme_folder):
    lines = [
        line.split("#")[0].strip() for block in blocks("sh") for line in block.splitlines()
        if line.startswith("convlens ")
    ]
    assert lines and not any(" serve" in line for line in lines)
    for line in lines:
        assert main([*shlex.split(line)[1:], "--quiet"] if "layers" not in line else
                    shlex.split(line)[1:]) == 0, line
    assert (readme_folder / "out" / "filters.png").exists()
    assert len(list((readme_folder / "out" / "cam").glob("*.png"))) == 4
    assert torch.is_grad_enabled()
