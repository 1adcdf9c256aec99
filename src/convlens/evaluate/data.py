"""What ``evaluate`` runs on: a folder (ImageFolder or flat), a list of images, or sample names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImageError, ModelError
from ..images import SAMPLES
from ..models.base import Model

__all__ = ["IMAGE_SUFFIXES", "Dataset", "class_indices", "resolve_source"]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


@dataclass
class Dataset:
    """Images to read (paths, sample names or arrays), their short names and optional labels."""

    items: list[Any]
    names: list[str]
    labels: list[Any] | None


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _folder(folder: Path) -> Dataset:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and _images_in(p))
    if classes:  # ImageFolder: one sub-folder per class
        items, labels = [], []
        for sub in classes:
            found = _images_in(sub)
            items += found
            labels += [sub.name] * len(found)
        return Dataset(items, [f"{p.parent.name}/{p.name}" for p in items], labels)
    items = _images_in(folder)
    if not items:
        raise ImageError(
            f"no images in {folder} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} files, "
            "directly or in one sub-folder per class)"
        )
    return Dataset(list(items), [p.name for p in items], None)


def _name(item: Any, index: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        text = os.fspath(item)
        return text.removeprefix("sample:") if not os.path.exists(text) else Path(text).name
    return f"image {index + 1}"


def resolve_source(source: Any, labels: Sequence[Any] | None = None) -> Dataset:
    """``source`` → a :class:`Dataset`; no image is read yet (files are only checked to exist).

    ``None`` is the bundled sample photos; a folder is read as an ImageFolder (sub-folders named
    by class) or as a flat folder; a path or sample name is one image; a list holds paths,
    sample names or arrays; an (N, H, W, 3) array is N images.
    """
    if source is None:
        data = Dataset(list(SAMPLES), list(SAMPLES), None)
    elif isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        data = _folder(Path(source))
    elif isinstance(source, np.ndarray) and source.ndim == 4:
        data = Dataset(list(source), [f"image {i + 1}" for i in range(len(source))], None)
    else:
        items = list(source) if isinstance(source, (list, tuple)) else [source]
        if not items:
            raise ImageError("no images given to evaluate")
        for item in items:
            if isinstance(item, (str, os.PathLike)):
                text = os.fspath(item)
                if text.removeprefix("sample:") not in SAMPLES and not Path(text).is_file():
                    raise ImageError(
                        f"image not found: {text} (a folder, image files, or sample names: "
                        f"{', '.join(SAMPLES)})"
                    )
        data = Dataset(items, [_name(item, i) for i, item in enumerate(items)], None)
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(data.items):
            raise ModelError(f"{len(labels)} labels for {len(data.items)} images; pass one each")
        data.labels = labels
    return data


def class_indices(model: Model, labels: Sequence[Any]) -> list[int]:
    """Labels (class indices, or class names as the model spells them) → class indices."""
    names = {n.lower(): i for i, n in enumerate(model.class_names or [])}
    indices = []
    for label in labels:
        text = str(label).strip()
        if isinstance(label, (int, np.integer)) or text.isdigit():
            indices.append(int(text))
            continue
        key = text.lower().replace("_", " ")
        if key not in names and text.lower() not in names:
            raise ModelError(
                f"label {text!r} is not a class of {model.name}; name the class folders (or "
                "labels) by class index or by the model's class names"
            )
        indices.append(names.get(text.lower(), names.get(key, -1)))
    return indices
