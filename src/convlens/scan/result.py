"""A finished scan, read back from its folder: tables as pandas DataFrames, and the questions."""

from __future__ import annotations

import csv
import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .sources import ScanError


class ScanResult:
    """The tables of a scan folder (``convlens scan --out DIR``, or ``cl.scan``).

    ``channels``, ``images``, ``topk``, ``classes``, ``selectivity`` and ``mistakes_table`` are
    pandas DataFrames of the Parquet files; ``skipped`` is skipped.csv as a list of dicts.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        if not path.is_file():
            raise ScanError(f"{self.folder} is not a scan folder (no manifest.json)")
        self.manifest: dict[str, Any] = json.loads(path.read_text())
        if self.manifest.get("status") != "complete":
            raise ScanError(
                f"the scan in {self.folder} did not finish; run it again with --resume"
            )

    def _table(self, name: str) -> Any:
        import pandas as pd

        return pd.read_parquet(self.folder / f"{name}.parquet")

    @cached_property
    def channels(self) -> Any:
        """layer, channel, images, firing_rate, mean, std, max, dead, rare, top_class,
        selectivity."""
        return self._table("channels")

    @cached_property
    def images(self) -> Any:
        """image, path, label, prediction, score (top-1 probability), correct."""
        return self._table("images")

    @cached_property
    def topk(self) -> Any:
        """layer, channel, rank, image, path, value, y, x and the input box x0, y0, x1, y1."""
        return self._table("topk")

    @cached_property
    def classes(self) -> Any:
        """class, name, images, correct, accuracy and the flattened mean Grad-CAM."""
        return self._table("classes")

    @cached_property
    def selectivity(self) -> Any:
        """layer, channel, class, mean: each channel's mean activation over each class."""
        return self._table("selectivity")

    @cached_property
    def mistakes_table(self) -> Any:
        return self._table("mistakes")

    @cached_property
    def skipped(self) -> list[dict[str, str]]:
        with open(self.folder / "skipped.csv", newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    @property
    def class_names(self) -> list[str] | None:
        return self.manifest["data"].get("class_names")

    @property
    def layers(self) -> list[str]:
        return list(self.manifest["parameters"]["layers"])

    # -- the questions -----------------------------------------------------------------------
    def dead_channels(self) -> dict[str, list[int]]:
        """{layer: [channel, ...]} that never fired (spatial max ≤ 0 on every image)."""
        dead = self.channels[self.channels["dead"]]
        found = {layer: [] for layer in self.layers}
        for layer, channel in zip(dead["layer"], dead["channel"]):
            found[layer].append(int(channel))
        return found

    def rare_channels(self) -> dict[str, list[int]]:
        """{layer: [channel, ...]} that fire on fewer than 1 % of the images (but some)."""
        rare = self.channels[self.channels["rare"]]
        found = {layer: [] for layer in self.layers}
        for layer, channel in zip(rare["layer"], rare["channel"]):
            found[layer].append(int(channel))
        return found

    def top_images(self, layer: str, channel: int) -> Any:
        """The channel's top-k rows: rank, image, path, value, argmax (y, x), input box."""
        if layer not in self.layers:
            raise ScanError(f"layer {layer!r} was not scanned; scanned: {', '.join(self.layers)}")
        t = self.topk
        rows = t[(t["layer"] == layer) & (t["channel"] == channel)]
        return rows.sort_values("rank").reset_index(drop=True)

    def _class_index(self, cls: int | str) -> int:
        if isinstance(cls, str):
            names = self.class_names or []
            if cls not in names:
                raise ScanError(f"no class {cls!r} in this scan; classes: {', '.join(names)}")
            return names.index(cls)
        return int(cls)

    def class_mean_cam(self, cls: int | str) -> np.ndarray:
        """(H, W) mean Grad-CAM of the class over its images (at the model's input size)."""
        index = self._class_index(cls)
        rows = self.classes[self.classes["class"] == index]
        if rows.empty or rows.iloc[0]["cam_height"] == 0:
            raise ScanError(
                f"no mean CAM for class {cls!r}: no labelled image of it, or the scan ran "
                "with --no-cam"
            )
        row = rows.iloc[0]
        cam = np.asarray(row["mean_cam"], np.float32)
        return cam.reshape(int(row["cam_height"]), int(row["cam_width"]))

    @property
    def confusion(self) -> Any:
        """The confusion matrix of the labelled images (rows: label, columns: prediction)."""
        import pandas as pd

        labelled = self.images[self.images["label"] >= 0]
        present = sorted(set(labelled["label"]) | set(labelled["prediction"]))
        names = self.class_names
        matrix = pd.crosstab(labelled["label"], labelled["prediction"]).reindex(
            index=present, columns=present, fill_value=0
        )
        if names:
            label = lambda i: names[i] if i < len(names) else f"class {i}"  # noqa: E731
            matrix.index = [label(i) for i in present]
            matrix.columns = [label(i) for i in present]
        matrix.index.name, matrix.columns.name = "label", "prediction"
        return matrix

    @property
    def accuracy(self) -> float | None:
        labelled = self.images[self.images["label"] >= 0]
        return None if labelled.empty else float(labelled["correct"].mean())

    def mistakes(self) -> list[dict[str, Any]]:
        """The misclassified images: image, path, label, prediction, score, and (H, W) float
        Grad-CAMs of the true (``cam_true``) and the predicted class (``cam_predicted``; None
        when the scan ran with ``cam=False``)."""
        cams = {int(row["image"]): row for row in self.mistakes_table.to_dict("records")}
        images = self.images
        wrong = images[(images["label"] >= 0) & ~images["correct"]]
        out = []
        for row in wrong.drop(columns="correct").to_dict("records"):
            cam = cams.get(int(row["image"]))
            for key in ("cam_true", "cam_predicted"):
                row[key] = None
                if cam is not None and cam["cam_height"]:
                    shape = (int(cam["cam_height"]), int(cam["cam_width"]))
                    row[key] = np.frombuffer(cam[key], np.uint8).reshape(shape) / np.float32(255)
            out.append(row)
        return out

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"<ScanResult {self.folder}: {m.get('images')} images, {m.get('skipped')} skipped, "
            f"{len(self.layers)} layers>"
        )
