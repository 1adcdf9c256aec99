"""Every command checks its arguments before any work, says what Ctrl-C left, never mixes runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from convlens.cli import common, main
from convlens.cli.output import MANIFEST

from .conftest import save_exported, tiny_convnet
from .test_image_safety import png_claiming


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return save_exported(tiny_convnet(), tmp_path_factory.mktemp("model") / "tiny.pt2")


@pytest.fixture
def files(tmp_path, model_file):
    model = model_file
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)).save(image)
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir").mkdir()
    (tmp_path / "bomb.png").write_bytes(png_claiming(13_000, 13_000))
    return {"model": model, "image": str(image), "tmp": tmp_path}


BAD = [
    (["filters", "--layer", "3", "--out", "{tmp}/adir"], "is a folder; pass a file name"),
    (["filters", "--layer", "3", "--out", "{tmp}/grid.jpg"], "must end in .png"),
    (["filters", "--layer", "3", "--out", "{tmp}/afile/grid.png"], "afile is a file"),
    (["activations", "chelsea", "--out", "{tmp}/afile/sub"], "afile is a file"),
    (["activations", "chelsea", "--out", "{tmp}/afile"], "is a file; pass a folder"),
    (["activations", "chelsea", "--per-row", "0", "--out", "{tmp}/o"], "must be at least 1"),
    (["activations", "chelsea", "--cmap", "nosuch", "--out", "{tmp}/o"], "no matplotlib colormap"),
    (["activations", "chelsea", "--device", "cuda:99", "--out", "{tmp}/o"], "CUDA"),
    (["activations", "chelsea", "--device", "gpu", "--out", "{tmp}/o"], "not a torch device"),
    (["activations", "{tmp}/bomb.png", "--out", "{tmp}/o"], "over the limit of 40 Mpx"),
    (["activations", "{tmp}/nope.png", "--out", "{tmp}/o"], "image file not found"),
    (["cam", "chelsea", "--alpha", "5", "--out", "{tmp}/o"], "between 0 and 1"),
    (["cam", "chelsea", "--target", "-1", "--out", "{tmp}/o"], "class indices start at 0"),
    (["cam", "chelsea", "coffee", "--target", "1", "2", "3", "--out", "{tmp}/o"], "one per image"),
    (["cam", "chelsea", "--method", "gradcm", "--out", "{tmp}/o"], "unknown CAM method"),
    (["cam", "chelsea", "--top-k", "0", "--out", "{tmp}/o"], "must be at least 1"),
    (["report", "--methods", "nosuch", "--out", "{tmp}/o"], "unknown CAM method"),
    (["report", "--top", "0", "--out", "{tmp}/o"], "must be at least 1"),
    (["report", "--out", "{tmp}/afile"], "is a file"),
    (["layers", "--input-size", "1", "2", "3"], "height and an optional width"),
    (["layers", "--preprocess", "caffe"], "invalid choice"),
    (["layers", "--kind", "cnv"], "invalid choice"),
]


@pytest.mark.parametrize(("argv", "message"), BAD, ids=[" ".join(a[:3]) for a, _ in BAD])
def test_bad_arguments_fail_in_one_line_before_any_work(files, monkeypatch, capsys, argv, message):
    def no_work(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(common, "load_model", no_work)
    before = sorted(p.name for p in files["tmp"].iterdir())
    with pytest.raises(SystemExit) as exit_info:
        code = main([a.format(tmp=files["tmp"]) for a in argv])
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert sorted(p.name for p in files["tmp"].iterdir()) == before  # nothing written


def _activations(files, out, *extra):
    return main(["activations", files["image"], "--model", files["model"], "--preprocess",
                 "unit", "--input-size", "32", "--out", str(out), "-q", *extra])


def test_ctrl_c_says_what_was_written(files, monkeypatch, capsys):
    from convlens.cli import activations

    saved = []
    real_save = activations.save_png

    def save_then_stop(picture, path):
        if len(saved) == 2:
            raise KeyboardInterrupt
        saved.append(path)
        return real_save(picture, path)

    monkeypatch.setattr(activations, "save_png", save_then_stop)
    out = files["tmp"] / "acts"
    assert _activations(files, out, "--layers", "0", "2", "3", "4") == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"convlens: interrupted: wrote 2 of 4 PNGs to {out}/; "
                   "no empty_channels.csv; no empty_channels.json")
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "000_0.png", "001_2.png"]
    assert json.loads((out / MANIFEST).read_text())["complete"] is False
    assert not list(files["tmp"].glob(".*convlens-*"))  # no staging folder left


def test_a_run_replaces_the_previous_runs_files_only(files):
    out = files["tmp"] / "acts"
    assert _activations(files, out, "--layers", "0", "2", "3") == 0
    (out / "notes.txt").write_text("mine")
    assert _activations(files, out, "--layers", "4") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        MANIFEST, "000_4.png", "empty_channels.csv", "empty_channels.json", "notes.txt",
    ]
    assert json.loads((out / MANIFEST).read_text())["complete"] is True


def test_report_writes_its_folder_only_at_the_end(files, monkeypatch, capsys):
    from convlens.cli import report

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "build_report", interrupted)
    out = files["tmp"] / "report"
    assert main(["report", files["image"], "--model", files["model"], "--input-size", "32",
                 "--out", str(out), "-q"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert not out.exists() and not list(files["tmp"].glob(".*convlens-*"))


def test_filters_keep_the_old_grid_until_the_new_one_is_done(files, monkeypatch, capsys):
    from convlens.cli import filters

    out = files["tmp"] / "grid.png"
    out.write_bytes(b"old")
    (files["tmp"] / "grid.json").write_text("old")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(filters, "visualize_filters", interrupted)
    assert main(["filters", "--model", files["model"], "--input-size", "32", "--layer", "3",
                 "--out", str(out), "-q"]) == 130
    assert capsys.readouterr().err.strip() == "convlens: interrupted: nothing written"
    assert out.read_bytes() == b"old" and (files["tmp"] / "grid.json").read_text() == "old"


def test_a_manifest_never_removes_files_outside_its_folder(files):
    out = files["tmp"] / "acts"
    out.mkdir()
    outside = files["tmp"] / "keep.txt"
    outside.write_text("mine")
    (out / MANIFEST).write_text(json.dumps({"files": ["../keep.txt", str(outside)]}))
    assert _activations(files, out, "--layers", "4") == 0
    assert outside.read_text() == "mine"
    assert json.loads((out / MANIFEST).read_text())["files"] == [
        "000_4.png", "empty_channels.csv", "empty_channels.json",
    ]
