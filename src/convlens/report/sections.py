"""The report's sections: each computes its facts (plain data) and stores its pictures by key."""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from importlib import metadata
from time import perf_counter
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..activations import activation_grid, empty_channels
from ..activations.grid import IMAGES_PER_ROW
from ..cam import METHODS, method_class
from ..filters.grid import FILTERS_PER_ROW
from ..models import LayerInfo, Model
from ..progress import Advance
from ..render import grid_png, jpeg_bytes, photo_bytes, to_png_bytes

if TYPE_CHECKING:
    from .builder import ReportOptions


def model_facts(model: Model) -> dict[str, Any]:
    """Name, framework, input size, parameter count and the layer table."""
    layers = model.layers()
    return {
        "name": model.name,
        "framework": model.framework,
        "input_size": list(model.input_size),
        "parameters": model.parameter_count(),
        "output": model.output,
        "classes": len(model.class_names) if model.class_names else None,
        "layers": [
            {
                "name": info.name,
                "kind": info.kind,
                "type": info.type,
                "output_shape": None if info.output_shape is None else list(info.output_shape[1:]),
            }
            for info in layers
        ],
    }


def predictions(
    model: Model, pixels: torch.Tensor, labels: Sequence[str], top: int,
    pictures: dict[str, bytes],
) -> list[dict[str, Any]]:
    """Top-``top`` classes per image, and each image as the model sees it."""
    answers = model.predict(pixels, top=top)
    facts = []
    for i, (label, answer) in enumerate(zip(labels, answers)):
        key = f"image-{i}"
        pictures[key] = photo_bytes(pixels[i])
        facts.append({
            "name": label,
            "picture": key,
            "predictions": [
                {"index": p.index, "name": p.name, "probability": round(p.probability, 6)}
                for p in answer
            ],
            "cam": {"classes": [], "methods": []},
        })
    return facts


# -- class activation maps -----------------------------------------------------------------------
def cam_methods(requested: Sequence[str] | None) -> list[str]:
    """The CAM methods to run (names or aliases; unknown ones are an error), Grad-CAM first."""
    if requested is not None and not requested:
        return []
    names = list(METHODS) if requested is None else [method_class(m).name for m in requested]
    return sorted(dict.fromkeys(names), key=lambda n: n != "gradcam")


def cam_work(images: int, classes: int, methods: Sequence[str]) -> int:
    """Progress steps of the CAM section: one per class overlay batch and per method."""
    return min(classes, 1000) + len(methods) if images else 0


def cams(
    model: Model, pixels: torch.Tensor, image_facts: list[dict[str, Any]], methods: Sequence[str],
    options: ReportOptions, pictures: dict[str, bytes], advance: Advance,
) -> None:
    """Grad-CAM for the top classes (with boxes), then every method for the top class."""
    top = len(image_facts[0]["predictions"])
    first: tuple[Any, list[bytes]] | None = None  # the top class's Grad-CAM, reused below
    seconds_per_call = []  # the first call warms the model up; later ones are timed alike
    for rank in range(min(options.cam_classes, top)):
        targets = [facts["predictions"][rank]["index"] for facts in image_facts]
        start = perf_counter()
        result = model.cam(pixels, method="gradcam", target=targets, layer=options.cam_layer)
        seconds_per_call.append(perf_counter() - start)
        jpegs = [jpeg_bytes(picture) for picture in result.boxed()]
        if rank == 0:
            first = (result, jpegs)
        for i, facts in enumerate(image_facts):
            key = f"cam-class-{i}-{rank}"
            box = [int(v) for v in result.boxes[i]]
            pictures[key] = jpegs[i]
            facts["cam"]["classes"].append({
                "rank": rank + 1, "target": int(result.target[i]),
                "name": result.target_names[i], "score": float(result.score[i]), "box": box,
                "layers": list(result.layers), "picture": key,
            })
        advance(1)
    if not methods:
        return
    from ..cam.metrics import deletion_insertion

    targets = [facts["predictions"][0]["index"] for facts in image_facts]
    for method in methods:
        quick = METHODS[method].quick_options
        if method == "gradcam" and first is not None and len(seconds_per_call) > 1:
            # the same call as the top-class row; its time from a warm call, as the others'
            (result, jpegs), seconds = first, seconds_per_call[-1]
        else:
            start = perf_counter()
            result = model.cam(
                pixels, method=method, target=targets, layer=options.cam_layer, **quick
            )
            seconds = perf_counter() - start
            jpegs = [jpeg_bytes(picture) for picture in result.boxed()]
        scores = deletion_insertion(model, result, steps=options.metric_steps)
        for i, facts in enumerate(image_facts):
            key = f"cam-method-{i}-{method}"
            pictures[key] = jpegs[i]
            facts["cam"]["methods"].append({
                "method": method, "target": int(result.target[i]),
                "name": result.target_names[i], "layers": list(result.layers),
                "deletion": round(float(scores["deletion"][i]), 4),
                "insertion": round(float(scores["insertion"][i]), 4),
                "options": quick,
                "seconds": round(seconds / len(image_facts), 3), "picture": key,
            })
        advance(1)


# -- activations ---------------------------------------------------------------------------------
def activations(
    model: Model, pixels: torch.Tensor, labels: Sequence[str], layers: Sequence[LayerInfo],
    shown: Sequence[int], pictures: dict[str, bytes], advance: Advance,
) -> dict[str, Any]:
    """Channel grids of ``layers`` for the ``shown`` images; empty channels for every image."""
    facts = []
    for info in layers:
        shape = list(info.output_shape[1:]) if info.output_shape else []
        facts.append({
            "name": info.name, "kind": info.kind, "type": info.type, "shape": shape,
            "channels": info.channels, "cell": shape[:2],
            "per_row": min(IMAGES_PER_ROW, info.channels or 1),
            "empty": {}, "empty_all": None, "grids": [],
        })
    empty_everywhere: dict[str, set[int]] = {}
    names = [info.name for info in layers]
    for i, label in enumerate(labels):
        acts = model.activations(pixels[i : i + 1], layers=names)
        rows = {row.layer: row for row in empty_channels(acts)}
        for layer_facts in facts:
            row = rows[layer_facts["name"]]
            layer_facts["empty"][label] = row.empty
            channels = set(row.channels)
            previous = empty_everywhere.get(row.layer)
            empty_everywhere[row.layer] = channels if previous is None else previous & channels
            if i in shown:
                key = f"act-{i}-{len(layer_facts['grids'])}-{row.layer}"
                pictures[key] = grid_png(activation_grid(acts[row.layer][0]))
                layer_facts["grids"].append({"image": label, "picture": key})
            advance(1)
    for layer_facts in facts:
        layer_facts["empty_all"] = len(empty_everywhere.get(layer_facts["name"], ()))
    return {"images": [labels[i] for i in shown], "layers": facts}


# -- filters -------------------------------------------------------------------------------------
def filter_layers(model: Model, options: ReportOptions) -> list[LayerInfo]:
    """The layers whose filters are drawn: evenly spaced conv layers, shallow to deep."""
    if not isinstance(options.filter_layers, int):
        return model.resolve(list(options.filter_layers))
    convs = [info for info in model.resolve("conv") if info.spatial]
    count = min(options.filter_layers, len(convs))
    if count <= 0:
        return []
    picks = np.unique(np.linspace(0, len(convs) - 1, count).round().astype(int))
    return [convs[i] for i in picks]


def filters(
    model: Model, layers: Sequence[LayerInfo], options: ReportOptions,
    pictures: dict[str, bytes], advance: Advance,
) -> dict[str, Any]:
    """A gallery of filter visualizations per layer."""
    if not layers:
        return {"recipe": options.filter_recipe, "layers": []}
    from ..filters import filter_grid

    facts = []
    for info in layers:
        start = perf_counter()
        channels = list(range(min(options.filter_channels, info.channels or 0)))
        extra = {key: value for key, value in
                 (("steps", options.filter_steps), ("size", options.filter_size))
                 if value is not None}
        result = model.filters(info.name, channels=channels, recipe=options.filter_recipe, **extra)
        key = f"filters-{info.name}"
        pictures[key] = to_png_bytes(filter_grid(result, per_row=FILTERS_PER_ROW))
        facts.append({
            "layer": info.name, "kind": info.kind, "channels": [int(c) for c in result.channels],
            "activation": [round(float(v), 4) for v in np.asarray(result.activation)],
            "quality": [round(float(v), 4) for v in np.asarray(result.quality)],
            "size": list(result.images.shape[1:3]), "per_row": FILTERS_PER_ROW,
            "seconds": round(perf_counter() - start, 3), "picture": key,
        })
        advance(1)
    return {"recipe": options.filter_recipe, "layers": facts}


# -- run facts -----------------------------------------------------------------------------------
def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def run_facts(model: Model, timings: dict[str, float], total: float) -> dict[str, Any]:
    """Versions, device and timings of this run."""
    packages = ["convlens", "torch", "numpy", "pillow", "scipy", "scikit-image", "matplotlib"]
    if model.framework == "keras":
        packages.append("keras")
    versions = {"python": sys.version.split()[0]}
    versions.update({p: v for p in packages if (v := _version(p)) is not None})
    return {
        "versions": versions,
        "platform": platform.platform(terse=True),
        "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."),
        "threads": torch.get_num_threads(),
        "timings": dict(timings),
        "total_seconds": round(total, 3),
    }
