"""Blank channels: feature maps that stay all zero on every given image.

Chollet's book notes that deeper layers have more and more "blank" activations: the pattern
encoded by the filter is not found in the input image. This module lists them per layer.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .grid import ActivationShapeError, as_numpy

__all__ = ["EmptyChannels", "empty_channels", "empty_channels_table", "write_csv", "write_json"]

FIELDS = ("layer", "channels", "empty", "total", "fraction")


@dataclass(frozen=True)
class EmptyChannels:
    """The all-zero channels of one layer (``channels``) out of ``total`` channels."""

    layer: str
    channels: tuple[int, ...]
    total: int

    @property
    def empty(self) -> int:
        """How many channels are empty."""
        return len(self.channels)

    @property
    def fraction(self) -> float:
        """Share of empty channels, 0.0 for a layer without channels."""
        return self.empty / self.total if self.total else 0.0


def _empty_mask(acts: Any, layer: str) -> np.ndarray:
    a = as_numpy(acts)
    if a.ndim == 3:  # one image, (H, W, C)
        a = a[None]
    if a.ndim != 4:
        raise ActivationShapeError(
            f"layer {layer!r}: expected channels-last activations (N, H, W, C), got shape {a.shape}"
        )
    # A channel is empty when no element of any image is non-zero (NaN counts as non-zero).
    return ~np.any(a, axis=(0, 1, 2))


def empty_channels(acts: Mapping[str, Any]) -> list[EmptyChannels]:
    """For each layer of ``{layer: (N, H, W, C)}``, the channels that are zero on all N images.

    Arrays may be numpy or torch; (H, W, C) is taken as one image. Layers keep the mapping's order.
    """
    result = []
    for layer, a in acts.items():
        mask = _empty_mask(a, layer)
        channels = tuple(int(i) for i in np.flatnonzero(mask))
        result.append(EmptyChannels(layer=str(layer), channels=channels, total=int(mask.size)))
    return result


def empty_channels_table(rows: Iterable[EmptyChannels]) -> list[dict[str, Any]]:
    """Rows ``{layer, channels (list), empty, total, fraction}`` ready for CSV/JSON or a table."""
    return [
        {
            "layer": r.layer,
            "channels": list(r.channels),
            "empty": r.empty,
            "total": r.total,
            "fraction": r.fraction,
        }
        for r in rows
    ]


def _as_table(rows: Iterable[EmptyChannels | Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [empty_channels_table([r])[0] if isinstance(r, EmptyChannels) else dict(r) for r in rows]


def write_csv(rows: Iterable[EmptyChannels | Mapping[str, Any]], path: str | Path) -> Path:
    """Write table rows (or :class:`EmptyChannels`) as CSV; channels are space-separated."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for row in _as_table(rows):
            row["channels"] = " ".join(str(c) for c in row["channels"])
            writer.writerow({k: row[k] for k in FIELDS})
    return path


def write_json(rows: Iterable[EmptyChannels | Mapping[str, Any]], path: str | Path) -> Path:
    """Write table rows (or :class:`EmptyChannels`) as a JSON list of objects."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_as_table(rows), indent=2) + "\n", encoding="utf-8")
    return path
