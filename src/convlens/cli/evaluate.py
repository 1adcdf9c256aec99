"""``convlens evaluate``: which CAM method at which layer to trust, measured on your images."""

from __future__ import annotations

import argparse
from pathlib import Path
from time import perf_counter

from ..errors import ConvlensError
from .common import add_model_option, model_from_args, out_dir


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "evaluate",
        help="score CAM methods x layers (pointing game, deletion/insertion, ROAD, ...)",
        description="Run the evaluation protocols for every CAM method at every chosen layer, "
        "with three baselines (random, centred Gaussian, Sobel edges), and write "
        "DIR/evaluation.parquet, evaluation.csv and evaluation.html.",
    )
    parser.add_argument("source", nargs="*", metavar="SOURCE",
                        help="a folder (one sub-folder per class, or flat), image files or "
                        "sample names (default: the bundled photos)")
    add_model_option(parser)
    parser.add_argument("--methods", nargs="+", default=["all"], metavar="METHOD",
                        help="CAM methods, 'all' (default) or 'gradient'")
    parser.add_argument("--layers", nargs="+", default=["auto"], metavar="LAYER",
                        help="'auto' (the default layer and its neighbours), 'all', 'default' "
                        "(each method's own) or names")
    parser.add_argument("--labels", nargs="+", default=None, metavar="CLASS",
                        help="one class (index or name) per image (default: the folder's, "
                        "else the top class)")
    parser.add_argument("--steps", type=int, default=20, help="deletion/insertion steps (20)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    parser.add_argument("--min-confidence", type=float, default=0.5,
                        help="least probability an image needs to enter a mosaic (0.5)")
    parser.add_argument("--protocols", nargs="+", default=None, metavar="PROTOCOL",
                        help="pointing, deletion, road, drop, randomization (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed (0): same seed, same table")
    parser.add_argument("--out", "-o", required=True, help="output folder")
    parser.set_defaults(func=run)


def _one_or_list(values: list[str]) -> str | list[str]:
    keywords = ("all", "auto", "default", "gradient")
    return values[0] if len(values) == 1 and values[0] in keywords else values


def run(args: argparse.Namespace) -> int:
    from ..evaluate import PROTOCOLS, evaluate
    from ..report.evaluation import save_evaluation

    start = perf_counter()
    if Path(args.out).is_file():
        raise ConvlensError(f"--out {args.out} is a file; pass a folder")
    model = model_from_args(args)
    ev = evaluate(
        model, args.source or None, methods=_one_or_list(args.methods),
        layers=_one_or_list(args.layers), labels=args.labels, steps=args.steps,
        bootstrap=args.bootstrap, min_confidence=args.min_confidence,
        protocols=args.protocols or tuple(PROTOCOLS),
        seed=args.seed, progress=not args.quiet,
    )
    path = save_evaluation(ev, out_dir(args.out))
    columns = ["method", "layer", "pointing", "deletion_auc", "insertion_auc", "road_morf",
               "road_lerf", "avg_drop", "increase", "randomization_rank_corr", "ms_per_image"]
    print(ev.table[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if (~ev.table["baseline"]).any():
        print(f"best: {ev.best()}")
    print(f"evaluation.parquet, evaluation.csv, evaluation.html → {path.parent}/ "
          f"({perf_counter() - start:.0f} s)")
    return 0
