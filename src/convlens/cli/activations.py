"""``convlens activations``: one channel-grid PNG per layer, and the empty-channel table."""

from __future__ import annotations

import argparse

from ..activations import activation_grid, empty_channels, write_csv, write_json
from ..progress import progress_bar
from ..render import colorize, save_png
from .common import add_model_option, image_stem, model_from_args, out_dir, slug


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
    parser.add_argument("--per-row", type=int, default=16, help="channels per grid row (16)")
    parser.add_argument("--cmap", default="viridis", help="matplotlib colormap (viridis)")
    parser.add_argument("--out", "-o", required=True, help="output folder")
    parser.set_defaults(func=run)


def _stem(source: str, n: int) -> str:
    return f"{n:02d}_{image_stem(source)}"


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    images = model.to_pixels(args.images)
    acts = model.activations(images, layers=args.layers)
    root = out_dir(args.out)
    written = 0
    with progress_bar("activation grids", len(acts) * len(images), not args.quiet) as advance:
        for n, source in enumerate(args.images):
            folder = root if len(images) == 1 else out_dir(str(root / _stem(source, n)))
            for k, (name, layer_acts) in enumerate(acts.items()):
                grid = activation_grid(layer_acts[n], images_per_row=args.per_row)
                save_png(colorize(grid, args.cmap), folder / f"{k:03d}_{slug(name)}.png")
                written += 1
                advance(1)
    table = empty_channels(acts)
    write_csv(table, root / "empty_channels.csv")
    write_json(table, root / "empty_channels.json")
    empty = sum(len(row.channels) for row in table)
    total = sum(row.total for row in table)
    print(
        f"{written} grids of {len(acts)} layers for {len(images)} image(s) → {root}/ ; "
        f"{empty} of {total} channels never fire (empty_channels.csv)"
    )
    return 0
