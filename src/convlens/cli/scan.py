"""``convlens scan``: what the model learned across a data set, into a folder of Parquet tables."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from ..models import BUILTIN_MODELS
from ..scan import ENGINES, RANKS, ScanError, check_out, execute, open_source, plan_scan
from .common import add_model_option, check_output_path, model_from_args


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "scan", help="scan a data set: dead channels, top images per channel, class CAMs, mistakes"
    )
    parser.add_argument(
        "source", metavar="SOURCE",
        help="an image folder (class subfolders or flat), a quoted glob, or a .csv/.parquet list",
    )
    add_model_option(parser)
    parser.add_argument("--out", "-o", required=True, help="the scan folder (tables, manifest)")
    parser.add_argument("--labels", default=None, help="a CSV/Parquet of path,label rows")
    parser.add_argument(
        "--layers", nargs="+", default=["conv"],
        help="layer names, globs or kinds with spatial outputs (default: conv)",
    )
    parser.add_argument("--top-k", type=int, default=9, help="images kept per channel (9)")
    parser.add_argument("--rank", choices=RANKS, default="max",
                        help="rank the top images by spatial max (default) or mean")
    parser.add_argument("--resume", action="store_true", help="continue the scan in --out")
    parser.add_argument("--no-cam", action="store_true",
                        help="skip the per-class mean Grad-CAM and the mistakes' CAMs")
    parser.add_argument("--engine", choices=ENGINES, default="local",
                        help="local (threads + this process) or ray (Ray Data actors)")
    parser.add_argument("--ray-address", default=None,
                        help="join this Ray cluster (e.g. ray://head:10001); default: a local Ray")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass (32)")
    parser.add_argument("--shard-size", type=int, default=1024,
                        help="images per committed shard, the unit of --resume (1024)")
    parser.add_argument("--workers", type=int, default=4, help="decoding threads (4)")
    parser.set_defaults(func=run)


def _check(args: argparse.Namespace) -> None:
    for name in ("top_k", "batch_size", "shard_size", "workers"):
        value = getattr(args, name)
        if value < 1:
            flag = "--" + name.replace("_", "-")
            raise ScanError(f"{flag} must be at least 1, not {value}")
    if args.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise ScanError("--engine ray needs Ray: pip install 'convlens[ray]'")
    if args.ray_address and args.engine != "ray":
        raise ScanError("--ray-address goes with --engine ray")


def model_source(args: argparse.Namespace) -> dict[str, Any]:
    """How to load ``--model`` again (recorded in the manifest, for the atlas's filters)."""
    path = args.model if args.model in BUILTIN_MODELS else str(Path(args.model).resolve())
    size = (args.input_size * 2)[:2] if args.input_size else None
    return {"path": path, "preprocess": args.preprocess, "input_size": size}


def run(args: argparse.Namespace) -> int:
    _check(args)
    check_output_path(args.out, "--out", folder=True)
    check_out(args.out, args.resume)
    open_source(args.source, labels=args.labels)  # a bad source is said before the model loads
    model = model_from_args(args)
    plan = plan_scan(
        model, args.source, args.out, layers=args.layers, top_k=args.top_k, rank=args.rank,
        labels=args.labels, cam=not args.no_cam, resume=args.resume, batch_size=args.batch_size,
        shard_size=args.shard_size, workers=args.workers, model_source=model_source(args),
    )
    result = execute(plan, engine=args.engine, ray_address=args.ray_address,
                     progress=not args.quiet)
    channels = result.channels
    dead = int(channels["dead"].sum())
    accuracy = result.accuracy
    facts = [
        f"{result.manifest['images']} images ({result.manifest['skipped']} skipped)",
        f"{dead} of {len(channels)} channels dead",
    ]
    if accuracy is not None:
        facts.append(f"accuracy {accuracy:.1%}")
    print(f"scanned {', '.join(facts)} → {result.folder}/")
    return 0
