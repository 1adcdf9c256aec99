"""Options and helpers shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..models import DEFAULT_MODEL, Model, load_model


def add_model_option(parser: argparse.ArgumentParser, repeat: bool = False) -> None:
    """--model (repeatable when ``repeat``: a list, None if not given) and its loading options."""
    parser.add_argument(
        "--model", "-m", action="append" if repeat else "store",
        default=None if repeat else DEFAULT_MODEL,
        help=f"a .keras/.h5/.pt file or a built-in model{'; repeat for several' if repeat else ''}"
        f" (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--preprocess", default=None,
        help="for model files: imagenet, unit, symmetric or raw (torch default imagenet, "
        "Keras default raw)",
    )
    parser.add_argument(
        "--input-size", type=int, nargs="+", metavar="PX", default=None,
        help="for model files: input height [width] (torch default 224; Keras: its input shape)",
    )
    parser.add_argument(
        "--trust-model-file", action="store_true",
        help="load a model file even if loading it can run code from the file (a pickled torch "
        "module, a Keras Lambda layer); only for files you trust",
    )
    parser.add_argument("--device", default=None, help="torch device, e.g. cuda or cpu")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def model_from_args(args: argparse.Namespace, source: str | None = None) -> Model:
    """The model named by ``--model`` (or ``source``), with the loading options given."""
    options = {}
    if args.preprocess:
        options["preprocess"] = args.preprocess
    if args.input_size:
        h, w = (args.input_size * 2)[:2]
        options["input_size"] = (h, w)
    model = load_model(source or args.model, trust=args.trust_model_file, **options)
    if args.device:
        model.network.to(args.device)
    return model


def out_dir(path: str) -> Path:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def slug(name: str) -> str:
    """A layer name made safe as a file name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("._") or "layer"


def image_stem(source: str) -> str:
    """An image argument (a path or a sample name) as a file-name stem."""
    return slug(Path(source).stem.removeprefix("sample:"))
