"""The scan's folder: committed shards, then Parquet tables and a manifest.

```
out/
  manifest.json       convlens version, model and data fingerprints, parameters, timings
  shards/00000.npz    one merged Partial per shard of the data, written atomically
  images.parquet  channels.parquet  topk.parquet  classes.parquet  selectivity.parquet
  mistakes.parquet  skipped.csv
```
Every file is written to a temporary name and renamed into place (``os.replace``), so a scan
killed at any moment leaves only whole files; ``--resume`` keeps the shards already there.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .aggregate import NO_IMAGE, Partial

#: A channel is rare when it fires on fewer than this share of the images.
RARE = 0.01
TABLES = ("images", "channels", "topk", "classes", "selectivity", "mistakes")


def write_atomic(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` through ``write(file)`` into a temporary file, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({} if "b" in mode else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True)), "w")


def shard_path(out: Path, index: int) -> Path:
    return out / "shards" / f"{index:05d}.npz"


def save_shard(out: Path, index: int, part: Partial) -> None:
    arrays = part.to_arrays()
    write_atomic(shard_path(out, index), lambda f: np.savez(f, **arrays))


def load_shard(out: Path, index: int) -> Partial:
    with np.load(shard_path(out, index), allow_pickle=False) as data:
        return Partial.from_arrays({key: data[key] for key in data.files})


def committed_shards(out: Path) -> set[int]:
    folder = out / "shards"
    if not folder.is_dir():
        return set()
    return {int(p.stem) for p in folder.glob("*.npz") if p.stem.isdigit()}


def _write_parquet(path: Path, columns: dict[str, Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(columns)
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    # dictionary pages for the string columns only (numbers plain): 30 % faster, the same data
    write_atomic(path, lambda f: pq.write_table(table, f, use_dictionary=strings or False))


def write_tables(
    out: Path, part: Partial, *, paths: dict[int, str], class_names: list[str] | None,
    boxes: dict[str, np.ndarray], rank: str,
) -> None:
    """The final tables of a merged Partial (``boxes``: per layer, (k*C, 4) in topk order)."""
    order = np.argsort(part.image_id, kind="stable")
    ids = part.image_id[order]
    _write_parquet(out / "images.parquet", {
        "image": ids, "path": [paths.get(int(i), "") for i in ids],
        "label": part.label[order], "prediction": part.prediction[order],
        "score": part.score[order], "correct": (part.label[order] == part.prediction[order]),
    })
    # each column gathered as NumPy pieces, one per layer, and joined once (pyarrow reads
    # arrays without a Python object per value)
    rows: dict[str, list[Any]] = {k: [] for k in (
        "layer", "channel", "images", "firing_rate", "mean", "std", "max", "dead", "rare",
        "top_class", "selectivity")}
    sel: dict[str, list[Any]] = {"layer": [], "channel": [], "class": [], "mean": []}
    top: dict[str, list[Any]] = {k: [] for k in (
        "layer", "channel", "rank", "image", "path", "value", "y", "x", "x0", "y0", "x1", "y1")}
    labelled_rows = np.searchsorted(part.classes, part.label[part.label >= 0])
    class_count = np.bincount(labelled_rows, minlength=len(part.classes))  # per part.classes
    known = np.array(sorted(paths), np.int64)
    # string columns as indices into their values, taken in Arrow (no Python string per row);
    # a path index past the known paths is an image without one ("")
    known_paths = [*(paths[int(i)] for i in known), ""]
    for number, (name, lp) in enumerate(part.layers.items()):
        channels = lp.fire.shape[0]
        n = max(lp.count, 1)
        rate = lp.fire / n
        class_mean = lp.class_sum / np.maximum(class_count, 1)[:, None]
        best, selectivity = _selectivity(class_mean)
        best_class = part.classes[best] if len(part.classes) else np.full(channels, -1)
        every = np.arange(channels, dtype=np.int64)
        for key, value in (
            ("layer", np.full(channels, number)), ("channel", every),
            ("images", np.full(channels, lp.count, np.int64)), ("firing_rate", rate),
            ("mean", lp.mean), ("std", np.sqrt(lp.m2 / n)), ("max", lp.max),
            ("dead", lp.fire == 0), ("rare", (lp.fire > 0) & (rate < RARE)),
            ("top_class", np.asarray(best_class, np.int64)), ("selectivity", selectivity),
        ):
            rows[key].append(value)
        classes = len(part.classes)
        sel["layer"].append(np.full(classes * channels, number))
        sel["channel"].append(np.tile(every, classes))
        sel["class"].append(np.repeat(part.classes.astype(np.int64), channels))
        sel["mean"].append(class_mean.reshape(-1))
        # top-k rows, channel by channel, rank by rank: (C, k) order
        valid = (lp.top_id != NO_IMAGE).T
        channel, rank = np.nonzero(valid)
        image = lp.top_id.T[valid]
        box = boxes[name].reshape(lp.top_id.shape[0], channels, 4).transpose(1, 0, 2)[valid]
        at = np.searchsorted(known, image).clip(0, max(len(known) - 1, 0))
        found = (known[at] == image) if len(known) else np.zeros(len(image), bool)
        path = np.where(found, at, len(known))
        for key, value in (
            ("layer", np.full(len(channel), number)),
            ("channel", channel.astype(np.int64)), ("rank", rank.astype(np.int64)),
            ("image", image), ("path", path), ("value", lp.top_value.T[valid]),
            ("y", lp.top_y.T[valid]), ("x", lp.top_x.T[valid]),
        ):
            top[key].append(value)
        for j, key in enumerate(("x0", "y0", "x1", "y1")):
            top[key].append(box[:, j])
    rows, sel, top = ({k: _joined(v) for k, v in d.items()} for d in (rows, sel, top))
    layers = list(part.layers)
    for table in (rows, sel, top):
        table["layer"] = _strings(layers, table["layer"])
    top["path"] = _strings(known_paths, top["path"])
    _write_parquet(out / "channels.parquet", rows)
    _write_parquet(out / "selectivity.parquet", sel)
    _write_parquet(out / "topk.parquet", top)
    _write_classes(out, part, class_names, class_count)
    _write_mistakes(out, part, paths)
    _write_skipped(out, part)


def _strings(values: list[str], index: np.ndarray) -> Any:
    """The Arrow string column ``values[index]``."""
    import pyarrow as pa

    return pa.array(values, pa.string()).take(pa.array(index))


def _joined(pieces: list[np.ndarray]) -> np.ndarray:
    """One column from its pieces, integers as int64 and floats as float64 (the types the
    tables have always had)."""
    if not pieces:
        return np.zeros(0)
    column = np.concatenate(pieces)
    if column.dtype.kind in "iu":
        return column.astype(np.int64, copy=False)
    if column.dtype.kind == "f":
        return column.astype(np.float64, copy=False)
    return column


def _selectivity(class_mean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel: the class with the highest mean activation, and Morcos et al.'s class
    selectivity (μ_best − μ_rest) / (μ_best + μ_rest) (0 where undefined)."""
    if class_mean.shape[0] < 2:
        channels = class_mean.shape[1]
        return np.zeros(channels, np.int64), np.zeros(channels)
    best = class_mean.argmax(axis=0)
    top = class_mean.max(axis=0)
    rest = (class_mean.sum(axis=0) - top) / (class_mean.shape[0] - 1)
    denom = top + rest
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(denom > 0, (top - rest) / denom, 0.0)
    return best, value


def _write_classes(
    out: Path, part: Partial, class_names: list[str] | None, class_count: np.ndarray
) -> None:
    right = (part.label >= 0) & (part.label == part.prediction)
    correct = np.bincount(
        np.searchsorted(part.classes, part.label[right]), minlength=len(class_count)
    )
    has_cam = part.cam_sum is not None and part.cam_count is not None
    columns: dict[str, list[Any]] = {k: [] for k in (
        "class", "name", "images", "correct", "accuracy", "cam_height", "cam_width", "mean_cam")}
    for row, cls in enumerate(part.classes):
        columns["class"].append(int(cls))
        name = class_names[cls] if class_names and cls < len(class_names) else f"class {cls}"
        columns["name"].append(name)
        columns["images"].append(int(class_count[row]))
        columns["correct"].append(int(correct[row]))
        columns["accuracy"].append(float(correct[row] / class_count[row]))
        if has_cam and part.cam_count[row] > 0:
            cam = (part.cam_sum[row] / part.cam_count[row]).astype(np.float32)
            columns["cam_height"].append(cam.shape[0])
            columns["cam_width"].append(cam.shape[1])
            columns["mean_cam"].append(cam.ravel().tolist())
        else:
            columns["cam_height"].append(0)
            columns["cam_width"].append(0)
            columns["mean_cam"].append([])
    _write_parquet(out / "classes.parquet", columns)


def _write_mistakes(out: Path, part: Partial, paths: dict[int, str]) -> None:
    by_id = {int(i): n for n, i in enumerate(part.image_id)}
    order = np.argsort(part.mistake_id, kind="stable")
    cams = part.mistake_cam if part.mistake_cam is not None else np.zeros((0, 2, 0, 0), np.uint8)
    rows: dict[str, list[Any]] = {k: [] for k in (
        "image", "path", "label", "prediction", "score", "cam_height", "cam_width", "cam_true",
        "cam_predicted")}
    for m in order:
        image = int(part.mistake_id[m])
        n = by_id[image]
        rows["image"].append(image)
        rows["path"].append(paths.get(image, ""))
        rows["label"].append(int(part.label[n]))
        rows["prediction"].append(int(part.prediction[n]))
        rows["score"].append(float(part.score[n]))
        rows["cam_height"].append(int(cams.shape[2]))
        rows["cam_width"].append(int(cams.shape[3]))
        rows["cam_true"].append(cams[m, 0].tobytes())
        rows["cam_predicted"].append(cams[m, 1].tobytes())
    import pyarrow as pa

    rows_typed = dict(rows)
    rows_typed["cam_true"] = pa.array(rows["cam_true"], pa.binary())
    rows_typed["cam_predicted"] = pa.array(rows["cam_predicted"], pa.binary())
    _write_parquet(out / "mistakes.parquet", rows_typed)


def _write_skipped(out: Path, part: Partial) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "path", "reason"])
    for image, path, reason in sorted(part.skipped):
        writer.writerow([image, path, reason])
    write_atomic(out / "skipped.csv", lambda f: f.write(buffer.getvalue()), "w")
