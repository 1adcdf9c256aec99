"""Collect what a convnet sees on some images into one plain dict, and render it.

:func:`build_report` runs every section (model, predictions, CAM, activations, filters, run
facts), timing each and showing one progress bar per section. The result is a :class:`Report`:
``facts`` (JSON-ready, the content of ``report.json``) and ``pictures`` (PNG/JPEG bytes the facts
refer to by key). :meth:`Report.save` writes ``index.html``, one self-contained file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from time import perf_counter
from typing import Any

import numpy as np

from ..errors import ModelError
from ..images import SAMPLES, ImageLike
from ..models import Model, load_model
from ..progress import Advance, progress_bar
from . import sections

__all__ = ["Report", "ReportOptions", "build_report", "image_label"]

@dataclass
class ReportOptions:
    """What goes into a report, and how much work it may take.

    ``cam_methods`` None means every method in ``convlens.cam.METHODS``; ``activation_images``
    is "first" (the book's choice: the first image), "all" or "none"; ``filter_recipe`` None
    leaves the filters section out; ``filter_layers`` is a count of evenly spaced conv layers or a
    list of layer names.
    """

    top: int = 5
    cam_classes: int = 3
    cam_methods: Sequence[str] | None = None
    cam_layer: str | None = None
    metric_steps: int = 16
    activation_layers: str | Sequence[str] | None = None
    activation_images: str = "first"
    filter_recipe: str | None = "chollet"
    filter_layers: int | Sequence[str] = 4
    filter_channels: int = 16
    filter_steps: int | None = None
    filter_size: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.activation_images not in ("first", "all", "none"):
            raise ModelError(
                "activation_images must be 'first', 'all' or 'none', "
                f"not {self.activation_images!r}"
            )
        if self.top < 1 or self.cam_classes < 0 or self.filter_channels < 1:
            raise ModelError("top and filter_channels must be at least 1, cam_classes at least 0")


@dataclass
class Report:
    """A finished report: JSON-ready ``facts`` and the ``pictures`` they refer to by key."""

    facts: dict[str, Any]
    pictures: dict[str, bytes]

    def to_json(self) -> str:
        """The facts as JSON, without picture keys (they only mean something in the HTML)."""
        return json.dumps(_without_pictures(self.facts), indent=2) + "\n"

    def to_html(self) -> str:
        from .html import render_html

        return render_html(self)

    def save(self, out: str | os.PathLike, *, write_json: bool = False) -> Path:
        """Write ``out/index.html`` (and ``out/report.json``); returns the HTML file's path."""
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        start = perf_counter()
        html = self.to_html()
        path = folder / "index.html"
        path.write_text(html, encoding="utf-8")
        self.facts["run"]["timings"]["html"] = round(perf_counter() - start, 3)
        if write_json:
            (folder / "report.json").write_text(self.to_json(), encoding="utf-8")
        return path


def _without_pictures(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_pictures(v) for k, v in value.items() if k != "picture"}
    if isinstance(value, list):
        return [_without_pictures(v) for v in value]
    return value


def image_label(source: ImageLike, index: int) -> str:
    """A short name for an input image: the sample name, the file name, or "image N"."""
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        name = text.removeprefix("sample:")
        if name in SAMPLES and not os.path.exists(text):
            return name
        return Path(text).name
    return f"image {index + 1}"


class _Run:
    """Times sections and opens one progress bar per section."""

    def __init__(self, progress: bool):
        self.progress = progress
        self.timings: dict[str, float] = {}

    @contextmanager
    def section(self, key: str, description: str, total: int) -> Iterator[Advance]:
        """Time a section; its bar is shown only when it has work (``total`` > 0)."""
        start = perf_counter()
        with progress_bar(description, total, enabled=self.progress and total > 0) as advance:
            yield advance
        self.timings[key] = round(perf_counter() - start, 3)


def build_report(
    model: Model | str | None = None,
    images: Sequence[ImageLike] | None = None,
    options: ReportOptions | None = None,
) -> Report:
    """Look at ``images`` (default: the bundled samples) through ``model`` (default: the zoo's)."""
    options = options or ReportOptions()
    model = model if isinstance(model, Model) else load_model(model)
    if isinstance(images, (str, os.PathLike)) or (
        isinstance(images, np.ndarray) and images.ndim == 3
    ):
        images = [images]
    sources: list[ImageLike] = list(images) if images is not None and len(images) else list(SAMPLES)
    labels = [image_label(s, i) for i, s in enumerate(sources)]
    run = _Run(options.progress)
    started = perf_counter()
    pictures: dict[str, bytes] = {}

    with run.section("model", "model and layers", 1) as advance:
        model_facts = sections.model_facts(model)
        pixels = model.to_pixels(sources)
        advance(1)
    with run.section("predictions", "predictions", 1) as advance:
        image_facts = sections.predictions(model, pixels, labels, options.top, pictures)
        advance(1)
    methods = sections.cam_methods(options.cam_methods)
    with run.section("cam", "class activation maps",
                     sections.cam_work(len(sources), options.cam_classes, methods)) as advance:
        sections.cams(model, pixels, image_facts, methods, options, pictures, advance)
    act_layers = model.resolve(options.activation_layers)
    shown = {"first": [0], "all": list(range(len(sources))), "none": []}[options.activation_images]
    with run.section("activations", "activations",
                     len(act_layers) * len(sources)) as advance:
        activations = sections.activations(
            model, pixels, labels, act_layers, shown, pictures, advance
        )
    filter_layers = sections.filter_layers(model, options) if options.filter_recipe else []
    with run.section("filters", "filter visualizations", len(filter_layers)) as advance:
        filters = sections.filters(model, filter_layers, options, pictures, advance)

    facts = {
        "title": f"convlens report: {model.name}",
        "model": model_facts,
        "images": image_facts,
        "activations": activations,
        "filters": filters,
        "options": _options_facts(options, methods),
        "run": sections.run_facts(model, run.timings, perf_counter() - started),
    }
    facts["run"]["generated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Report(facts=facts, pictures=pictures)


def _options_facts(options: ReportOptions, methods: list[str]) -> dict[str, Any]:
    facts = asdict(options)
    facts["cam_methods"] = methods
    for key, value in facts.items():
        if isinstance(value, tuple):
            facts[key] = list(value)
    return facts
