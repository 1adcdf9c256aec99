"""``convlens filters``: the patterns a layer's channels respond to most, as one grid PNG."""

from __future__ import annotations

import argparse
import json
import math

from ..filters import RECIPES, filter_grid, visualize_filters
from ..render import save_png
from .common import add_model_option, check_output_path, model_from_args, positive_int
from .output import Staged


def parse_channels(text: str) -> list[int]:
    """``"0:64"``, ``"0:64:4"`` (start:stop[:step]), ``"3,7,9"`` or ``"5"`` → channel indices."""
    try:
        if ":" in text:
            parts = [int(p) for p in text.split(":")]
            if len(parts) not in (2, 3) or parts[0] < 0:
                raise ValueError
            picked = list(range(*parts))
        else:
            picked = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad channel list {text!r}; use start:stop (0:64), start:stop:step (0:64:4) "
            "or a comma list (3,7,9)"
        ) from None
    if not picked or any(c < 0 for c in picked):
        raise argparse.ArgumentTypeError(f"channel list {text!r} selects no valid channel")
    return picked


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "filters", help="draw the pattern each channel of a layer responds to (gradient ascent)"
    )
    add_model_option(parser)
    parser.add_argument("--layer", "-l", required=True, help="layer name (see `convlens layers`)")
    parser.add_argument(
        "--channels", "-c", type=parse_channels, default=None,
        help="channels: 0:64, 0:64:4 or 3,7,9 (default: the first 16)",
    )
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="chollet",
                        help="chollet (the book: fast, 30 steps) or lucid (Lucid quality)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="ascent steps (recipe default)")
    parser.add_argument("--size", type=positive_int, default=None, help="image size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed (0)")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="images per chunk (default: what fits in memory)")
    parser.add_argument("--per-row", type=positive_int, default=8,
                        help="images per grid row (8)")
    parser.add_argument("--out", "-o", required=True, help="grid PNG to write (+ a .json beside)")
    parser.set_defaults(func=run)


def _number(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def run(args: argparse.Namespace) -> int:
    out = check_output_path(args.out, "--out", folder=False, suffix=".png")
    summary = out.with_suffix(".json")
    model = model_from_args(args)
    result = visualize_filters(
        model, args.layer, channels=args.channels, recipe=args.recipe, seed=args.seed,
        steps=args.steps, size=args.size, batch_size=args.batch_size, progress=not args.quiet,
    )
    table = {
        "model": model.name, "layer": result.layer, "recipe": result.recipe, "seed": args.seed,
        "image_size": list(result.images.shape[1:3]),
        "channels": [
            {"channel": c, "activation": _number(a), "quality": _number(q)}
            for c, a, q in zip(result.channels, result.activation, result.quality)
        ],
    }
    # both files are replaced together; Ctrl-C or an error before this leaves the old ones
    with Staged(out.parent, {out.name: 1, summary.name: 1}, manifest=False) as staged:
        save_png(filter_grid(result, per_row=args.per_row), staged.path(out.name))
        staged.path(summary.name).write_text(json.dumps(table, indent=2))
    finite = [q for q in result.quality if math.isfinite(q)]
    above = sum(q > 1 for q in finite)
    median = sorted(finite)[len(finite) // 2] if finite else float("nan")
    print(
        f"{len(result.channels)} filters of {result.layer} ({result.recipe}) → {out} "
        f"(+ {summary.name}); quality median {median:.2f}, {above}/{len(result.channels)} "
        "above 1 (1 = strongest sample photo)"
    )
    return 0
