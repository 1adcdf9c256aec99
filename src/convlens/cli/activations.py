"""``convlens activations``: one channel-grid PNG per layer, and the empty-channel table."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..activations import activation_grid, empty_channels, write_csv, write_json
from ..progress import progress_bar
from ..render import colorize, save_png
from .common import (
    add_model_option,
    check_images,
    check_output_path,
    colormap,
    image_stem,
    model_from_args,
    positive_int,
    slug,
)
from .output import Staged


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "activations", help="draw every conv/pool layer's channels for images (the book's grids)"
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files or sample names")
    add_model_option(parser)
    parser.add_argument(
        "--layers", nargs="+", default=None,
        help="layer names, globs ('layer4.*') or kinds ('conv'); default: conv + pooling layers",
    )
    parser.add_argument("--per-row", type=positive_int, default=16,
                        help="channels per grid row (16)")
    parser.add_argument("--cmap", type=colormap, default="viridis",
                        help="matplotlib colormap (viridis)")
    parser.add_argument("--out", "-o", required=True,
                        help="output folder (the files of an earlier run there are replaced)")
    parser.set_defaults(func=run)


def _stem(source: str, n: int) -> str:
    return f"{n:02d}_{image_stem(source)}"


def run(args: argparse.Namespace) -> int:
    root = check_output_path(args.out, "--out", folder=True)
    check_images(args.images)
    model = model_from_args(args)
    images = model.to_pixels(args.images)
    acts = model.activations(images, layers=args.layers)
    table = empty_channels(acts)
    expected = {".png": len(acts) * len(images), "empty_channels.csv": 1,
                "empty_channels.json": 1}
    with Staged(root, expected) as out, progress_bar(
        "activation grids", len(acts) * len(images), not args.quiet
    ) as advance:
        for n, source in enumerate(args.images):
            folder = Path() if len(images) == 1 else Path(_stem(source, n))
            for k, (name, layer_acts) in enumerate(acts.items()):
                grid = activation_grid(layer_acts[n], images_per_row=args.per_row)
                save_png(colorize(grid, args.cmap), out.path(folder / f"{k:03d}_{slug(name)}.png"))
                advance(1)
        write_csv(table, out.path("empty_channels.csv"))
        write_json(table, out.path("empty_channels.json"))
    empty = sum(len(row.channels) for row in table)
    total = sum(row.total for row in table)
    print(
        f"{expected['.png']} grids of {len(acts)} layers for {len(images)} image(s) → {root}/ ; "
        f"{empty} of {total} channels never fire (empty_channels.csv)"
    )
    return 0
