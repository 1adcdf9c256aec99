"""The channel atlas: a scan folder as static HTML pages that open offline.

``atlas/index.html``: the summary (images, skipped, accuracy, confusion matrix), the dead / rare
census of every layer, each class's mean Grad-CAM and the mistakes gallery. One page per layer
(``atlas/layers/<n>.html``): a card per channel with its firing rate, mean and max, and its top-k
receptive-field patches in one JPEG strip, loaded lazily, so every conv layer of a ResNet-50
(about 26,000 channels) stays usable.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from ..images import load_image, resize
from ..render import colorize, data_uri, jpeg_bytes, overlay
from ..scan import ScanResult

__all__ = ["build_atlas"]

PATCH = 64  # px, one top-k patch in a channel's strip
CAM_SIZE = 96  # px, a class CAM or a mistake picture


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("convlens.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)


def _square(pixels: np.ndarray, size: int) -> np.ndarray:
    return resize(pixels, (size, size), "nearest" if pixels.shape[0] < size else "bilinear")


def _strip(patches: list[np.ndarray]) -> bytes:
    """Patches (PATCH x PATCH x 3) side by side with 2 px white gaps, as one JPEG."""
    width = len(patches) * (PATCH + 2) - 2
    strip = np.full((PATCH, max(width, 1), 3), 255, np.uint8)
    for i, patch in enumerate(patches):
        strip[:, i * (PATCH + 2): i * (PATCH + 2) + PATCH] = np.clip(patch, 0, 255).round()
    return jpeg_bytes(strip, quality=85)


class _Images:
    """Images read as the scan read them (at the model's input size), a few kept in memory."""

    def __init__(self, size: tuple[int, int]):
        self.size = size
        self.cache: dict[str, np.ndarray] = {}

    def get(self, path: str) -> np.ndarray | None:
        if path not in self.cache:
            if len(self.cache) > 4096:
                self.cache.clear()
            try:
                self.cache[path] = load_image(path, size=self.size)
            except Exception:
                return None  # moved or deleted since the scan: a grey patch
        return self.cache[path]


def _layer_page(result: ScanResult, index: int, layer: str, images: _Images, out: Path
                ) -> dict[str, Any]:
    channels = result.channels[result.channels["layer"] == layer]
    topk = result.topk[result.topk["layer"] == layer]
    by_channel = {int(ch): rows for ch, rows in topk.groupby("channel")}
    folder = out / "layers" / f"{index:03d}"
    cards = []
    for row in channels.itertuples():
        rows = by_channel.get(int(row.channel))
        strip = None
        if rows is not None and len(rows):
            patches = []
            for top in rows.sort_values("rank").itertuples():
                pixels = images.get(top.path) if top.path else None
                if pixels is None:
                    patches.append(np.full((PATCH, PATCH, 3), 128.0))
                    continue
                crop = pixels[top.y0:top.y1 + 1, top.x0:top.x1 + 1]
                patches.append(_square(crop, PATCH))
            strip = f"{index:03d}/{int(row.channel)}.jpg"
            _write(folder / f"{int(row.channel)}.jpg", _strip(patches))
        cards.append({
            "channel": int(row.channel), "firing_rate": float(row.firing_rate),
            "mean": float(row.mean), "max": float(row.max), "dead": bool(row.dead),
            "rare": bool(row.rare), "strip": strip,
            "values": [] if rows is None else [
                f"{v:.3g}" for v in rows.sort_values("rank")["value"]
            ],
        })
    page = _environment().get_template("atlas_layer.html").render(
        layer=layer, index=index, cards=cards, rank=result.manifest["parameters"]["rank"],
        top_k=result.manifest["parameters"]["top_k"],
    )
    _write(out / "layers" / f"{index:03d}.html", page)
    dead = int(channels["dead"].sum())
    rare = int(channels["rare"].sum())
    return {"index": index, "name": layer, "channels": len(channels), "dead": dead, "rare": rare,
            "active": len(channels) - dead - rare}


def _cam_picture(pixels: np.ndarray | None, cam: np.ndarray) -> str:
    if pixels is None:
        picture = colorize(np.round(cam * 255).astype(np.uint8), "jet")
    else:
        picture = overlay(pixels, cam)
    return data_uri(jpeg_bytes(_square(picture.astype(np.float32), CAM_SIZE), quality=85))


def build_atlas(scan: str | Path | ScanResult, out: str | Path) -> Path:
    """Write the atlas of a scan folder into ``out``; returns the path of its index.html."""
    result = scan if isinstance(scan, ScanResult) else ScanResult(scan)
    out = Path(out)
    size = tuple(result.manifest["model"].get("input_size") or (224, 224))
    images = _Images(size)  # type: ignore[arg-type]
    layers = [
        _layer_page(result, i, layer, images, out) for i, layer in enumerate(result.layers)
    ]
    classes = []
    for row in result.classes.itertuples():
        cam = None
        if row.cam_height:
            cam = np.asarray(row.mean_cam, np.float32).reshape(row.cam_height, row.cam_width)
        classes.append({
            "name": row.name, "images": int(row.images), "accuracy": float(row.accuracy),
            "cam": None if cam is None else _cam_picture(None, cam),
        })
    names = result.class_names or []

    def name(i: int) -> str:
        return names[i] if 0 <= i < len(names) else f"class {i}"

    mistakes = []
    for m in result.mistakes()[:200]:
        pixels = images.get(m["path"]) if m["path"] else None
        mistakes.append({
            "path": m["path"], "label": name(int(m["label"])),
            "prediction": name(int(m["prediction"])), "score": float(m["score"]),
            "image": None if pixels is None else data_uri(jpeg_bytes(
                _square(pixels, CAM_SIZE).round().astype(np.uint8), quality=85)),
            "cam_true": None if m["cam_true"] is None or pixels is None
            else _cam_picture(pixels, m["cam_true"]),
            "cam_predicted": None if m["cam_predicted"] is None or pixels is None
            else _cam_picture(pixels, m["cam_predicted"]),
        })
    confusion = result.confusion if result.accuracy is not None else None
    manifest = result.manifest
    page = _environment().get_template("atlas.html").render(
        manifest=manifest, accuracy=result.accuracy, layers=layers, classes=classes,
        mistakes=mistakes, mistakes_total=len(result.mistakes()),
        confusion=None if confusion is None else {
            "labels": [html.escape(str(c)) for c in confusion.columns],
            "rows": [(str(i), [int(v) for v in r]) for i, r in zip(confusion.index,
                                                                   confusion.values)],
            "max": int(confusion.values.max()) if confusion.size else 0,
        },
        skipped=result.skipped[:100], skipped_total=len(result.skipped),
    )
    index = out / "index.html"
    _write(index, page)
    return index
