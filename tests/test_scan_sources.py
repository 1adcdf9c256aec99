"""Scan sources: folders, globs, CSV/Parquet lists and label tables → numbered items."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from convlens.scan import ScanError, open_source
from convlens.scan.sources import decode


@pytest.fixture
def flat(tmp_path):
    for name in ("b.png", "a.jpg", "c.png", "notes.txt"):
        path = tmp_path / "flat" / name
        path.parent.mkdir(exist_ok=True)
        if name.endswith("txt"):
            path.write_text("not an image")
        else:
            Image.fromarray(np.zeros((4, 6, 3), np.uint8)).save(path)
    return tmp_path / "flat"


def test_flat_folder_and_glob_with_a_label_table(flat, tmp_path):
    source = open_source(flat)
    assert [item.path for item in source.items] == [str(flat / n) for n in ("a.jpg", "b.png",
                                                                           "c.png")]
    assert [item.id for item in source.items] == [0, 1, 2]
    assert source.class_names is None and {item.label for item in source.items} == {-1}
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.jpg,dog\nflat/b.png,cat\n")  # by name, by relative path
    source = open_source(str(flat / "*.png"), labels=labels)
    assert [item.path.rsplit("/", 1)[-1] for item in source.items] == ["b.png", "c.png"]
    assert source.class_names == ["cat"]
    assert [item.label for item in source.items] == [0, -1]  # c.png has no label


def test_csv_and_parquet_lists(flat, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("path,label\nflat/c.png,zebra\nflat/a.jpg,ant\n")
    source = open_source(listing)
    assert [(item.path, item.label) for item in source.items] == [
        (str(tmp_path / "flat/c.png"), 1), (str(tmp_path / "flat/a.jpg"), 0)
    ]
    assert source.class_names == ["ant", "zebra"]
    table = tmp_path / "list.parquet"
    pq.write_table(pa.table({"file": [str(flat / "b.png")]}), table)  # first column = paths
    assert [item.path for item in open_source(table).items] == [str(flat / "b.png")]
    # labels the model knows keep the model's class indices
    source = open_source(listing, model_classes=["zebra", "yak", "ant"])
    assert [item.label for item in source.items] == [0, 2]


def test_bad_sources_and_unreadable_files(flat, tmp_path):
    with pytest.raises(ScanError, match="no image files"):
        open_source(str(tmp_path / "*.gif"))
    with pytest.raises(ScanError, match="cannot scan a int"):
        open_source(3)
    bad = tmp_path / "labels.csv"
    bad.write_text("path,class\na.jpg,dog\n")
    with pytest.raises(ScanError, match="no 'label' column"):
        open_source(flat, labels=bad)
    assert "not an image" in decode(str(flat / "notes.txt"), (8, 8))
    assert decode(str(flat / "a.jpg"), (8, 8)).shape == (8, 8, 3)
