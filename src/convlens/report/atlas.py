"""The channel atlas: a scan folder as HTML pages, written offline or served by the explorer.

:class:`AtlasPages` renders the pages of a scan, whoever shows them: ``build_atlas`` writes them
as static files that open offline (``atlas/index.html``, one page per layer in ``atlas/layers/``),
and the explorer (``convlens serve --scan``) serves the same pages, only the links differ
(:class:`AtlasLinks`). The summary page: images, skipped, accuracy, the confusion matrix, the
dead / rare census of every layer, each class's mean Grad-CAM and the mistakes gallery. A layer's
page: a card per channel with its firing rate, mean and max, its top-k receptive-field patches in
one lazily loaded JPEG strip, and its filter visualization (for the most firing channels, when
the scan's model is at hand), so every conv layer of a ResNet-50 (about 26,000 channels) stays
usable.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Collection
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
import numpy as np

from ..errors import ConvlensError
from ..images import load_image, resize
from ..progress import Advance
from ..render import colorize, data_uri, jpeg_bytes, overlay
from ..scan import ScanError, ScanResult

if TYPE_CHECKING:
    from ..models import Model

__all__ = [
    "OFFLINE", "AtlasLinks", "AtlasPages", "build_atlas", "filter_pictures", "scan_model",
]

PATCH = 64  # px, one top-k patch in a channel's strip
CAM_SIZE = 96  # px, a class CAM or a mistake picture
FILTER_SIZE = 64  # px, a filter visualization on its card


@dataclass(frozen=True)
class AtlasLinks:
    """Where the pages point: ``index`` from a layer page back to the summary; ``layer(i)`` from
    the summary to layer ``i``'s page; ``strip(i, c)`` and ``filter(i, c)`` from layer ``i``'s page
    to channel ``c``'s top-k strip and filter picture."""

    index: str
    layer: Callable[[int], str]
    strip: Callable[[int, int], str]
    filter: Callable[[int, int], str]


#: The links of the offline atlas folder (``build_atlas``).
OFFLINE = AtlasLinks(
    "../index.html", lambda i: f"layers/{i:03d}.html", lambda i, c: f"{i:03d}/{c}.jpg",
    lambda i, c: f"{i:03d}/filter-{c}.jpg",
)


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("convlens.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined,
    )


def _square(pixels: np.ndarray, size: int) -> np.ndarray:
    return resize(pixels, (size, size), "nearest" if pixels.shape[0] < size else "bilinear")


def _strip(patches: list[np.ndarray]) -> bytes:
    """Patches (PATCH x PATCH x 3) side by side with 2 px white gaps, as one JPEG."""
    width = len(patches) * (PATCH + 2) - 2
    strip = np.full((PATCH, max(width, 1), 3), 255, np.uint8)
    for i, patch in enumerate(patches):
        strip[:, i * (PATCH + 2): i * (PATCH + 2) + PATCH] = np.clip(patch, 0, 255).round()
    return jpeg_bytes(strip, quality=85)


def _cam_picture(pixels: np.ndarray | None, cam: np.ndarray) -> str:
    if pixels is None:
        picture = colorize(np.round(cam * 255).astype(np.uint8), "jet")
    else:
        picture = overlay(pixels, cam)
    return data_uri(jpeg_bytes(_square(picture.astype(np.float32), CAM_SIZE), quality=85))


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


class AtlasPages:
    """The atlas of one scan: its pages as HTML strings, the strips as JPEG bytes.

    >>> pages = AtlasPages("scan/")
    >>> pages.index_html(OFFLINE), pages.layer_html(0, OFFLINE), pages.strip(0, 7)
    """

    def __init__(self, scan: str | Path | ScanResult):
        self.result = scan if isinstance(scan, ScanResult) else ScanResult(scan)
        size = tuple(self.result.manifest["model"].get("input_size") or (224, 224))
        self.images = _Images(size)  # type: ignore[arg-type]
        self.layers = self.result.layers
        self._topk_cache: dict[str, dict[int, Any]] = {}

    @property
    def manifest(self) -> dict[str, Any]:
        return self.result.manifest

    def layer_name(self, index: int) -> str:
        if not 0 <= index < len(self.layers):
            raise ScanError(f"the scan has layers 0..{len(self.layers) - 1}, not {index}")
        return self.layers[index]

    @cached_property
    def _channels(self) -> dict[str, Any]:
        return {name: rows for name, rows in self.result.channels.groupby("layer", sort=False)}

    def _topk(self, layer: str) -> dict[int, Any]:
        """A layer's top-k rows per channel, rank order (grouped when first asked for)."""
        if layer not in self._topk_cache:
            table = self.result.topk
            rows = table[table["layer"] == layer].sort_values(["channel", "rank"])
            self._topk_cache[layer] = {int(c): r for c, r in rows.groupby("channel", sort=False)}
        return self._topk_cache[layer]

    # -- facts ---------------------------------------------------------------------------------
    @cached_property
    def census(self) -> list[dict[str, Any]]:
        """Per layer: index, name, channels, dead, rare, active."""
        rows = []
        for index, name in enumerate(self.layers):
            channels = self._channels[name]
            dead, rare = int(channels["dead"].sum()), int(channels["rare"].sum())
            rows.append({"index": index, "name": name, "channels": len(channels), "dead": dead,
                         "rare": rare, "active": len(channels) - dead - rare})
        return rows

    def cards(self, index: int) -> list[dict[str, Any]]:
        """Layer ``index``'s channels: channel, firing_rate, mean, max, dead, rare, top values."""
        name = self.layer_name(index)
        top = self._topk(name)
        return [
            {
                "channel": int(row.channel), "firing_rate": float(row.firing_rate),
                "mean": float(row.mean), "max": float(row.max), "dead": bool(row.dead),
                "rare": bool(row.rare),
                "values": [float(v) for v in top[int(row.channel)]["value"]]
                if int(row.channel) in top else [],
            }
            for row in self._channels[name].itertuples()
        ]

    def filter_choice(self, index: int, count: int) -> list[int]:
        """The ``count`` channels of layer ``index`` whose filters to draw: the channels that fire
        on the most images (then the highest max); dead channels never."""
        if count <= 0:
            return []
        rows = self._channels[self.layer_name(index)]
        alive = rows[~rows["dead"]].sort_values(
            ["firing_rate", "max", "channel"], ascending=[False, False, True], kind="stable"
        )
        return sorted(int(c) for c in alive["channel"].head(count))

    # -- pictures ------------------------------------------------------------------------------
    def strip(self, index: int, channel: int) -> bytes | None:
        """The channel's top-k receptive-field patches as one JPEG (None: no top image)."""
        rows = self._topk(self.layer_name(index)).get(int(channel))
        if rows is None or not len(rows):
            return None
        patches = []
        for top in rows.itertuples():
            pixels = self.images.get(top.path) if top.path else None
            if pixels is None:
                patches.append(np.full((PATCH, PATCH, 3), 128.0))
                continue
            crop = pixels[top.y0:top.y1 + 1, top.x0:top.x1 + 1]
            patches.append(_square(crop, PATCH))
        return _strip(patches)

    # -- pages ---------------------------------------------------------------------------------
    def layer_html(
        self, index: int, links: AtlasLinks, *, filters: Collection[int] = (),
        filter_note: str = "", live: dict[str, Any] | None = None,
    ) -> str:
        """Layer ``index``'s page. ``filters``: the channels with a filter picture; the other
        cards say ``filter_note``. ``live``: the explorer's filter job (``start`` URL, ``count``,
        ``choice``), which the page can start."""
        name = self.layer_name(index)
        drawn = set(filters)
        cards = self.cards(index)
        for card in cards:
            channel = card["channel"]
            card["strip"] = links.strip(index, channel) if card["values"] else None
            card["filter"] = links.filter(index, channel)
            card["drawn"] = channel in drawn
            card["values"] = [f"{v:.3g}" for v in card["values"]]
        parameters = self.manifest["parameters"]
        return _environment().get_template("atlas_layer.html").render(
            layer=name, index=index, cards=cards, rank=parameters["rank"],
            top_k=parameters["top_k"], back=links.index, filter_note=filter_note, live=live,
        )

    def index_html(self, links: AtlasLinks, *, model_note: str = "") -> str:
        """The summary page: facts, confusion matrix, census, class CAMs, mistakes, skipped."""
        result = self.result
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

        all_mistakes = result.mistakes()
        mistakes = []
        for m in all_mistakes[:200]:
            pixels = self.images.get(m["path"]) if m["path"] else None
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
        layers = [{**row, "href": links.layer(row["index"])} for row in self.census]
        return _environment().get_template("atlas.html").render(
            manifest=self.manifest, accuracy=result.accuracy, layers=layers, classes=classes,
            mistakes=mistakes, mistakes_total=len(all_mistakes), model_note=model_note,
            confusion=None if confusion is None else {
                "labels": [html.escape(str(c)) for c in confusion.columns],
                "rows": [(str(i), [int(v) for v in r]) for i, r in zip(confusion.index,
                                                                       confusion.values)],
                "max": int(confusion.values.max()) if confusion.size else 0,
            },
            skipped=result.skipped[:100], skipped_total=len(result.skipped),
        )


# -- the scan's model and its filters ----------------------------------------------------------
def scan_model(
    result: ScanResult, model: Model | None = None, *, trust: bool = False
) -> tuple[Model | None, str]:
    """The scan's model for its filter pictures, and what the cards say when there is none.

    ``model``: the one given (an error if it is not the model the scan ran); otherwise the model
    file the manifest names (``convlens scan --model FILE`` records it), if it is still there
    and unchanged.
    """
    from ..models import load_model
    from ..scan.engine import model_fingerprint

    facts = result.manifest["model"]
    expected = facts.get("fingerprint")
    if model is not None:
        if expected and model_fingerprint(model) != expected:
            raise ScanError(
                f"--model {model.name} is not the model the scan ran ({facts.get('name')}, "
                f"fingerprint {expected}); pass the scan's model, or leave --model out"
            )
        return model, ""
    source = facts.get("source")
    title = facts.get("name") or "the model"
    if not source:
        return None, (f"no filter pictures: the scan's model ({title}) came from Python; "
                      "pass --model FILE")
    path = str(source["path"])
    options = {key: tuple(v) if isinstance(v, list) else v
               for key in ("preprocess", "input_size") if (v := source.get(key)) is not None}
    try:
        found = load_model(path, trust=trust, **options)
    except Exception as err:  # gone, or cannot be read: the atlas is still written
        return None, f"no filter pictures: the scan's model {path} cannot be loaded ({err})"
    if expected and model_fingerprint(found) != expected:
        return None, f"no filter pictures: {path} changed since the scan; pass --model FILE"
    return found, ""


def filter_pictures(
    model: Model, layer: str, channels: list[int], *, recipe: str = "chollet",
    steps: int | None = None, size: int | None = None, progress: bool | Advance | None = None,
) -> tuple[Any, dict[int, bytes]]:
    """The filter visualizations of ``channels`` (one batched ascent): the FilterResult and a
    FILTER_SIZE px JPEG per channel."""
    options: dict[str, Any] = {"recipe": recipe, "progress": progress}
    if steps is not None:
        options["steps"] = steps
    if size is not None:
        options["size"] = size
    result = model.filters(layer, channels=channels, **options)
    pictures = {
        int(c): jpeg_bytes(_square(image.astype(np.float32), FILTER_SIZE).round(), quality=85)
        for c, image in zip(result.channels, result.images)
    }
    return result, pictures


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)


def build_atlas(
    scan: str | Path | ScanResult, out: str | Path, *, model: Model | None = None,
    model_note: str = "", filter_channels: int = 16, recipe: str = "chollet",
    filter_steps: int | None = None, filter_size: int | None = None, progress: bool = False,
) -> Path:
    """Write the atlas of a scan folder into ``out``; returns the path of its index.html.

    ``model``: the scan's model (``scan_model``), to draw the filters of the
    ``filter_channels`` most firing channels of each layer (0: none); without it the cards say
    ``model_note``.
    """
    pages = AtlasPages(scan)
    out = Path(out)
    note = model_note if model is None else (
        f"filter pictures: the {filter_channels} most firing channels of each layer"
        if filter_channels else "no filter pictures (--filter-channels 0)"
    )
    for index in range(len(pages.layers)):
        drawn: dict[int, bytes] = {}
        layer_note = note
        choice = pages.filter_choice(index, filter_channels) if model is not None else []
        if choice:
            try:
                _, drawn = filter_pictures(model, pages.layers[index], choice, recipe=recipe,
                                           steps=filter_steps, size=filter_size,
                                           progress=progress)
            except ConvlensError as err:  # this layer's cards say why; the atlas goes on
                layer_note = f"no filter pictures for this layer: {err}"
        for channel, picture in drawn.items():
            _write(out / "layers" / OFFLINE.filter(index, channel), picture)
        for card in pages.cards(index):
            strip = pages.strip(index, card["channel"])
            if strip is not None:
                _write(out / "layers" / OFFLINE.strip(index, card["channel"]), strip)
        _write(out / "layers" / f"{index:03d}.html",
               pages.layer_html(index, OFFLINE, filters=drawn, filter_note=layer_note))
    index_path = out / "index.html"
    _write(index_path, pages.index_html(OFFLINE, model_note="" if model is not None else note))
    return index_path
