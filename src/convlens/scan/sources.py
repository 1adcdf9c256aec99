"""Where a scan's images come from: folders, globs, lists, or an iterable of batches.

A file source becomes a sorted list of :class:`Item` (id, path, label); the id is the item's
position in that list, so two scans of the same files number them the same way. Decoding reads
a file exactly as the rest of convlens does (``images.load_image`` at the model's input size).
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConvlensError, ImageError

#: File suffixes a folder or glob source picks up.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class ScanError(ConvlensError, ValueError):
    """A scan cannot start: a bad source, label list, option or output folder."""


@dataclass(frozen=True)
class Item:
    """One image of a file source: its id (position in the sorted list), path and label (-1)."""

    id: int
    path: str
    label: int = -1


@dataclass
class FileSource:
    """A sorted list of image files, with class names when the source has labels."""

    items: list[Item]
    class_names: list[str] | None
    root: str

    def fingerprint(self) -> str:
        """A hash of every (path, size, mtime, label): it changes when the data changes."""
        digest = hashlib.sha256()
        for item in self.items:
            try:
                st = os.stat(item.path)
                stamp = f"{st.st_size}:{st.st_mtime_ns}"
            except OSError:
                stamp = "missing"
            digest.update(f"{item.path}\0{stamp}\0{item.label}\n".encode())
        return digest.hexdigest()[:16]


@dataclass
class BatchSource:
    """An iterable of ``(images, labels)`` batches (a torch DataLoader, a Keras dataset...)."""

    batches: Iterable[Any]
    class_names: list[str] | None = None

    def fingerprint(self) -> str:
        return "iterable"


Source = FileSource | BatchSource


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and _is_image(p))


def _label_index(names: Sequence[str], model_classes: Sequence[str] | None) -> dict[str, int]:
    """Label name → class index: the model's own index when it knows every name, else sorted."""
    if model_classes and all(n in model_classes for n in names):
        position = {n: i for i, n in enumerate(model_classes)}
        return {n: position[n] for n in names}
    return {n: i for i, n in enumerate(sorted(names))}


def _class_list(index: dict[str, int], model_classes: Sequence[str] | None) -> list[str]:
    if model_classes and all(n in model_classes for n in index):
        return list(model_classes)
    return sorted(index, key=index.__getitem__)


def _parse_label(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    text = str(value).strip()
    return text or None


def read_label_table(path: str | os.PathLike) -> dict[str, str]:
    """A CSV (or Parquet) of ``path,label`` rows → {path: label}."""
    rows = _read_table(Path(path))
    if "label" not in rows:
        raise ScanError(f"{path} has no 'label' column; give it columns path,label")
    return {
        str(p): lab for p, v in zip(rows["path"], rows["label"])
        if (lab := _parse_label(v)) is not None
    }


def _read_table(path: Path) -> dict[str, list[Any]]:
    """The columns of a CSV or Parquet list; the paths column is 'path' (or the first one)."""
    if not path.is_file():
        raise ScanError(f"list file not found: {path}")
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        columns = pq.read_table(path).to_pydict()
    else:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames:
                raise ScanError(f"{path} is empty; give it a header line 'path,label'")
            columns = {name: [] for name in reader.fieldnames}
            for row in reader:
                for name in reader.fieldnames:
                    columns[name].append(row[name])
    if not columns:
        raise ScanError(f"{path} has no columns; give it a header line 'path,label'")
    if "path" not in columns:
        first = next(iter(columns))
        columns["path"] = columns[first]
    return columns


def _resolve_relative(paths: Iterable[Any], base: Path) -> list[str]:
    out = []
    for p in paths:
        text = str(p)
        out.append(text if os.path.isabs(text) else str(base / text))
    return out


def _attach_labels(
    paths: list[str], labels: dict[str, str], root: Path
) -> list[str | None]:
    """The label of each path, matched by the path as given, relative to root, or file name."""
    by_abs = {os.path.abspath(k if os.path.isabs(k) else root / k): v for k, v in labels.items()}
    by_name = {os.path.basename(k): v for k, v in labels.items()}
    found = []
    for path in paths:
        found.append(
            labels.get(path) or by_abs.get(os.path.abspath(path))
            or by_name.get(os.path.basename(path))
        )
    return found


def open_source(
    source: Any,
    *,
    labels: str | os.PathLike | dict[str, str] | None = None,
    model_classes: Sequence[str] | None = None,
) -> Source:
    """A scan source from a folder, a glob, a CSV/Parquet list, a list of paths or an iterable.

    - a folder whose subfolders hold the images: ImageFolder, class = subfolder name;
    - a folder of images (a flat folder): unlabelled unless ``labels`` maps paths to labels;
    - a glob (``"photos/**/*.jpg"``), a list of paths;
    - a ``.csv`` / ``.parquet`` file: a ``path`` column (or its first one), optional ``label``;
    - any other iterable: ``(images, labels)`` batches of pixels 0..255, (N, H, W, 3) or
      (N, 3, H, W) (labels may be None).
    """
    label_map = read_label_table(labels) if isinstance(labels, (str, os.PathLike)) else labels
    names: list[str | None]
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        path = Path(text)
        if path.is_dir():
            root = path
            files = _files_under(path)
            subfolders = {f.relative_to(path).parts[0] for f in files if f.parent != path}
            flat = [f for f in files if f.parent == path]
            if subfolders and not flat and label_map is None:
                names = [f.relative_to(path).parts[0] for f in files]  # ImageFolder
            else:
                names = [None] * len(files)
            paths = [str(f) for f in files]
        elif path.suffix.lower() in (".csv", ".parquet") and path.is_file():
            root = path.parent
            table = _read_table(path)
            paths = _resolve_relative(table["path"], root)
            names = [_parse_label(v) for v in table.get("label", [None] * len(paths))]
        elif any(ch in text for ch in "*?["):
            root = Path(".")
            paths = sorted(p for p in glob.glob(text, recursive=True) if _is_image(Path(p)))
            names = [None] * len(paths)
        else:
            raise ScanError(
                f"no such folder, list or glob: {text} (give an image folder, a glob in quotes "
                "like 'photos/**/*.jpg', or a .csv/.parquet list)"
            )
        if label_map is not None:
            names = _attach_labels(paths, label_map, root)
    elif isinstance(source, (list, tuple)) and all(
        isinstance(s, (str, os.PathLike)) for s in source
    ):
        root = Path(".")
        paths = [os.fspath(s) for s in source]
        names = _attach_labels(paths, label_map, root) if label_map else [None] * len(paths)
    elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, dict)):
        if labels is not None:
            raise ScanError("labels= is for file sources; an iterable yields its own labels")
        return BatchSource(source, list(model_classes) if model_classes else None)
    else:
        raise ScanError(
            f"cannot scan a {type(source).__name__}; give a folder, a glob, a .csv/.parquet "
            "list, a list of paths, or an iterable of (images, labels) batches"
        )
    if not paths:
        raise ScanError(f"no image files in {source} (looked for {', '.join(IMAGE_SUFFIXES)})")
    known = sorted({n for n in names if n is not None})
    index = _label_index(known, model_classes) if known else {}
    items = [Item(i, p, index[n] if n is not None else -1) for i, (p, n) in
             enumerate(zip(paths, names))]
    class_names = _class_list(index, model_classes) if index else None
    return FileSource(items, class_names, str(root))


def decode(path: str, size: tuple[int, int]) -> np.ndarray | str:
    """The image as ``Model.to_pixels`` reads a path (float32 (H, W, 3)), or why it cannot be."""
    from ..images import load_image

    try:
        return load_image(path, size=size)
    except ImageError as err:
        return str(err)
    except Exception as err:  # a decoder bug on a hostile file must not end the scan
        return f"{type(err).__name__}: {err}"
