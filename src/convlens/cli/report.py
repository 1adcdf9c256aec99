"""``convlens report``: one self-contained HTML page with everything convlens shows."""

from __future__ import annotations

import argparse
from pathlib import Path
from time import perf_counter

from ..report import ReportOptions, build_report
from .common import (
    add_model_option,
    check_images,
    check_output_path,
    model_from_args,
    non_negative_int,
    positive_int,
)
from .output import Staged, UsageError


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "report",
        help="an HTML report (predictions, CAM, activations, filters) that opens offline",
        description="Write DIR/index.html: the model, top-5 predictions, Grad-CAM and the other "
        "CAM methods with deletion/insertion scores, every conv/pool layer's channel grid, and "
        "filter visualizations. Without IMAGE: the bundled sample photos.",
    )
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files or sample names")
    add_model_option(parser)
    parser.add_argument("--out", "-o", default="out/report",
                        help="output folder (out/report), written when the report is done")
    parser.add_argument("--json", action="store_true", help="also write DIR/report.json")
    parser.add_argument(
        "--filters", default="chollet", choices=("chollet", "lucid", "none"),
        help="filter recipe: chollet (fast, default), lucid (better pictures, slower) or none",
    )
    parser.add_argument("--filter-layers", type=non_negative_int, default=4,
                        help="evenly spaced conv layers to draw filters of (4)")
    parser.add_argument("--filter-channels", type=non_negative_int, default=16,
                        help="filters per layer (16; with --scan: of its most firing channels; "
                        "0: none)")
    parser.add_argument("--filter-steps", type=positive_int, default=None,
                        help="optimization steps (default: the recipe's)")
    parser.add_argument("--filter-size", type=positive_int, default=None,
                        help="filter image size in pixels (default: the recipe's)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help="CAM methods (default: all of them); 'none' for no CAM section")
    parser.add_argument("--cam-classes", type=non_negative_int, default=3,
                        help="Grad-CAM overlays per image, for its top classes (3)")
    parser.add_argument("--metric-steps", type=positive_int, default=16,
                        help="deletion/insertion curve steps (16)")
    parser.add_argument("--activations", default="first", choices=("first", "all", "none"),
                        help="whose channel grids to show: the first image (default), all, none")
    parser.add_argument("--layers", nargs="+", default=None,
                        help="activation layers: names, globs or kinds (default: conv + pool)")
    parser.add_argument("--top", type=positive_int, default=5, help="predictions per image (5)")
    parser.add_argument("--scan", default=None, metavar="DIR",
                        help="instead: the channel atlas of a `convlens scan` folder (its model: "
                        "--model, or the model file the scan recorded)")
    parser.set_defaults(func=run, model=None)  # None: the default model (report) or the scan's


def options_from_args(args: argparse.Namespace) -> ReportOptions:
    no_cam = args.methods is not None and [m.lower() for m in args.methods] == ["none"]
    return ReportOptions(
        top=args.top,
        cam_classes=0 if no_cam else args.cam_classes,
        cam_methods=[] if no_cam else args.methods,
        metric_steps=args.metric_steps,
        activation_layers=args.layers,
        activation_images=args.activations,
        filter_recipe=None if args.filters == "none" or not args.filter_channels
        else args.filters,
        filter_layers=args.filter_layers,
        filter_channels=args.filter_channels,
        filter_steps=args.filter_steps,
        filter_size=args.filter_size,
        progress=not args.quiet,
    )


def run(args: argparse.Namespace) -> int:
    from ..report.sections import cam_methods

    start = perf_counter()
    folder = check_output_path(args.out, "--out", folder=True)
    if args.scan:
        return _atlas(args, folder, start)
    options = options_from_args(args)
    cam_methods(options.cam_methods)  # unknown names fail now, not after the predictions
    check_images(args.images)
    model = model_from_args(args)
    report = build_report(model, args.images or None, options)
    with Staged(folder, {"index.html": 1, **({"report.json": 1} if args.json else {})}) as out:
        report.save(out.folder, write_json=args.json)
    path = folder / "index.html"
    size = path.stat().st_size / 2**20
    print(f"report: {path} ({size:.1f} MB, {perf_counter() - start:.0f} s)")
    if args.json:
        print(f"facts:  {folder / 'report.json'}")
    print(f"open:   {path.resolve().as_uri()}")
    return 0


def _atlas(args: argparse.Namespace, folder: Path, start: float) -> int:
    """``report --scan DIR``: every argument checked, then the model, then the pages."""
    from ..report.atlas import build_atlas, scan_model
    from ..scan import ScanResult

    if args.images:
        raise UsageError("IMAGE arguments do not go with --scan (the atlas shows the scan's "
                         "images); leave them out")
    result = ScanResult(args.scan)  # not a finished scan folder: one line, nothing written
    if folder.resolve() == result.folder.resolve():
        raise UsageError("--out must not be the --scan folder; give a folder for the atlas")
    count = 0 if args.filters == "none" else args.filter_channels
    given = model_from_args(args) if args.model else None
    model, note = scan_model(result, given, trust=args.trust_model_file) if count else (None, "")
    if not count:
        note = "no filter pictures (--filter-channels 0)"
    with Staged(folder, {"index.html": 1}) as out:
        build_atlas(
            result, out.folder, model=model, model_note=note, filter_channels=count,
            recipe="chollet" if args.filters == "none" else args.filters,
            filter_steps=args.filter_steps, filter_size=args.filter_size,
            progress=not args.quiet,
        )
    path = folder / "index.html"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20
    print(f"atlas: {path} ({size:.2f} MB, {perf_counter() - start:.0f} s)"
          + (f"\n{note}" if note and model is None else ""))
    print(f"open:  {path.resolve().as_uri()}")
    return 0
