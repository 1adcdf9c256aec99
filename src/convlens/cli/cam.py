"""``convlens cam``: class activation heatmaps with the object box, raw maps and a JSON summary."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..render import save_png
from .common import (
    UsageError,
    add_model_option,
    check_images,
    check_output_path,
    fraction,
    image_stem,
    model_from_args,
    positive_int,
    slug,
)
from .output import Staged


def register(sub: argparse._SubParsersAction) -> None:
    from ..cam import METHODS

    parser = sub.add_parser(
        "cam", help="class activation heatmaps (Grad-CAM family) with the object's box"
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or sample names")
    add_model_option(parser)
    parser.add_argument(
        "--method", nargs="+", default=["gradcam"], metavar="METHOD",
        help=f"one or more of {', '.join(METHODS)}, or 'all' (default: gradcam)",
    )
    parser.add_argument(
        "--target", nargs="+", default=None, metavar="TARGET",
        help="class index, class name or top-k (e.g. top-3); one for all images or one per "
        "image (default: each image's top class)",
    )
    parser.add_argument(
        "--layer", nargs="+", default=None, metavar="LAYER",
        help="layer name(s); several are fused (default: the last layer with a spatial output)",
    )
    parser.add_argument("--top-k", type=positive_int, default=None,
                        help="Score-CAM: score only the K channels of largest variance")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="Score-CAM / Ablation-CAM batch size (default: tuned)")
    parser.add_argument("--alpha", type=fraction, default=0.4,
                        help="heatmap opacity, 0 to 1 (0.4)")
    parser.add_argument("--metrics", action="store_true",
                        help="also compute deletion/insertion AUC, average drop and increase")
    parser.add_argument("--steps", type=positive_int, default=50,
                        help="deletion/insertion steps (50)")
    parser.add_argument("--out", "-o", required=True,
                        help="output folder (the files of an earlier run there are replaced)")
    parser.set_defaults(func=run)


def _methods(requested: list[str]) -> list[str]:
    from ..cam import METHODS, make_method

    if any(name.lower() == "all" for name in requested):
        return list(METHODS)
    return list(dict.fromkeys(make_method(name, {}).name for name in requested))


def _target(values: list[str] | None, images: int) -> Any:
    if values is None:
        return None
    parsed: list[Any] = []
    for value in values:
        if value.lstrip("-").isdigit():
            if int(value) < 0:
                raise UsageError(
                    f"--target {value}: class indices start at 0 (the first class); "
                    "pass 0..N-1, a class name or top-k"
                )
            parsed.append(int(value))
        else:
            parsed.append(value)
    if len(parsed) not in (1, images):
        raise UsageError(
            f"--target takes one target for all images or one per image ({images}), "
            f"not {len(parsed)}"
        )
    return parsed[0] if len(parsed) == 1 else parsed


def _targets_per_image(target: Any) -> int:
    first = target[0] if isinstance(target, list) else target
    if isinstance(first, str) and first.lower().startswith("top-") and first[4:].isdigit():
        return int(first[4:])
    return 1


def _stems(sources: list[str]) -> list[str]:
    stems = [image_stem(s) for s in sources]
    if len(set(stems)) < len(stems):
        stems = [f"{n:02d}_{stem}" for n, stem in enumerate(stems)]
    return stems


def _options(method: str, args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if method == "scorecam" and args.top_k is not None:
        options["top_k"] = args.top_k
    if method in ("scorecam", "ablationcam") and args.batch_size is not None:
        options["batch_size"] = args.batch_size
    return options


def _print_metrics(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Faithfulness (deletion: lower is better; the others: higher)")
    for column in ("image", "method", "class", "deletion AUC", "insertion AUC", "drop %",
                   "increase"):
        table.add_column(column, justify="left" if column in ("image", "method", "class")
                         else "right")
    for row in rows:
        m = row["metrics"]
        table.add_row(
            Path(row["image"]).name, row["method"], row["name"], f"{m['deletion']:.3f}",
            f"{m['insertion']:.3f}", f"{100 * m['drop']:.1f}", "yes" if m["increase"] else "no",
        )
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    from ..cam import compute_cam
    from ..cam.metrics import faithfulness

    root = check_output_path(args.out, "--out", folder=True)
    methods = _methods(args.method)
    target = _target(args.target, len(args.images))
    check_images(args.images)
    model = model_from_args(args)
    pixels = model.to_pixels(args.images)
    stems = _stems(args.images)
    maps = len(methods) * len(args.images) * _targets_per_image(target)
    expected = {".png": maps, ".npy": maps, "summary.json": 1}
    if args.metrics:
        expected["metrics.json"] = 1
    rows: list[dict[str, Any]] = []
    with Staged(root, expected) as out:
        for method in methods:
            start = time.perf_counter()
            cams = compute_cam(
                model, pixels, method=method, target=target, layer=args.layer,
                progress=not args.quiet, **_options(method, args),
            )
            seconds = time.perf_counter() - start
            scores = faithfulness(model, cams, steps=args.steps, progress=not args.quiet) if (
                args.metrics) else None
            pictures = cams.annotated(alpha=args.alpha)
            for row in range(len(cams)):
                image = cams.image_index[row]
                name = f"{stems[image]}_{method}_{slug(cams.target_names[row])}"
                save_png(pictures[row], out.path(f"{name}.png"))
                np.save(out.path(f"{name}.npy"), cams.raw[row])
                entry: dict[str, Any] = {
                    "image": args.images[image], "method": method, "layers": cams.layers,
                    "target": cams.target[row], "name": cams.target_names[row],
                    "score": round(float(cams.score[row]), 6),
                    "probability": round(float(cams.probability[row]), 6),
                    "box": list(cams.boxes[row]), "empty": bool(cams.empty[row]),
                    "overlay": f"{name}.png", "raw": f"{name}.npy",
                    "raw_shape": list(cams.raw[row].shape),
                    "seconds_per_image": round(seconds / len(pixels), 4),
                }
                if scores is not None:
                    entry["metrics"] = {key: round(float(values[row]), 6)
                                        for key, values in scores.items()}
                rows.append(entry)
            print(f"{cams.title}: {len(cams)} map(s) of {', '.join(cams.layers)} "
                  f"in {seconds:.2f} s")
        summary = {"model": model.name, "methods": methods, "results": rows}
        out.path("summary.json").write_text(json.dumps(summary, indent=2))
        if args.metrics:
            _print_metrics(rows)
            out.path("metrics.json").write_text(json.dumps(
                [{k: r[k] for k in ("image", "method", "target", "name", "metrics")}
                 for r in rows],
                indent=2,
            ))
    print(f"{len(rows)} overlay(s), raw maps and summary.json → {root}/")
    return 0
