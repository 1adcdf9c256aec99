"""Options and helpers shared by the subcommands.

Every argument is checked before any work starts: by its ``type=`` when it is parsed (numbers,
fractions, colormaps, devices), and by :func:`check_images` / :func:`check_output_path` (files)
before the model is loaded. Errors are one line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import torch

from ..images import check_image_file
from ..models import DEFAULT_MODEL, Model, load_model
from ..models.preprocess import PREPROCESSING
from .output import UsageError, check_output_path

__all__ = [
    "OneLineParser", "UsageError", "add_model_option", "check_images", "check_output_path",
    "colormap", "device", "fraction", "image_stem", "model_from_args", "positive_int", "slug",
]


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the problem and where to look), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _whole_number(text: str, minimum: int, wording: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be {wording}, not {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: a whole number of at least 1."""
    return _whole_number(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    """argparse type: a whole number of at least 0."""
    return _whole_number(text, 0, "0 or more")


def fraction(text: str) -> float:
    """argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def colormap(text: str) -> str:
    """argparse type: the name of a matplotlib colormap."""
    import difflib

    from matplotlib import colormaps

    if text in colormaps:
        return text
    close = difflib.get_close_matches(text, list(colormaps), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise argparse.ArgumentTypeError(
        f"no matplotlib colormap {text!r}; {hint}e.g. viridis, magma, gray"
    )


def device(text: str) -> str:
    """argparse type: a torch device this machine has."""
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a torch device; use cpu or cuda"
        ) from None
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"{text}: this machine (this torch build) has no CUDA device; use cpu"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"{text}: there are only {torch.cuda.device_count()} CUDA device(s)"
            )
    elif parsed.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text}: MPS is not available here; use cpu")
    elif parsed.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text}: convlens runs on cpu, cuda or mps")
    return text


def add_model_option(parser: argparse.ArgumentParser, repeat: bool = False) -> None:
    """--model (repeatable when ``repeat``: a list, None if not given) and its loading options."""
    parser.add_argument(
        "--model", "-m", action="append" if repeat else "store",
        default=None if repeat else DEFAULT_MODEL,
        help=f"a .keras/.h5 file, a TorchScript .pt, a torch.export .pt2, or a built-in model"
        f"{'; repeat for several' if repeat else ''} (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--trust-model-file", action="store_true",
        help="load a model file even if loading it can run code from the file (a pickled torch "
        "module, a Keras Lambda layer); only for files you trust",
    )
    parser.add_argument(
        "--preprocess", default=None, choices=list(PREPROCESSING),
        help="for model files: imagenet, unit, symmetric or raw (torch default imagenet, "
        "Keras default raw)",
    )
    parser.add_argument(
        "--input-size", type=positive_int, nargs="+", metavar="PX", default=None,
        help="for model files: input height [width] (torch default 224; Keras: its input shape)",
    )
    parser.add_argument("--device", type=device, default=None,
                        help="torch device, e.g. cuda or cpu")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def model_from_args(args: argparse.Namespace, source: str | None = None) -> Model:
    """The model named by ``--model`` (or ``source``), with the loading options given."""
    options = {}
    if args.preprocess:
        options["preprocess"] = args.preprocess
    if args.input_size:
        if len(args.input_size) > 2:
            raise UsageError(
                f"--input-size takes a height and an optional width, not {len(args.input_size)} "
                "numbers"
            )
        h, w = (args.input_size * 2)[:2]
        options["input_size"] = (h, w)
    model = load_model(source or args.model, trust=args.trust_model_file, **options)
    if args.device:
        model.network.to(args.device)
    return model


def check_images(sources: Sequence[str]) -> None:
    """Each image argument exists (or is a sample) and its header is readable and not too big."""
    for source in sources:
        check_image_file(source)


def slug(name: str) -> str:
    """A layer name made safe as a file name."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("._") or "layer"


def image_stem(source: str) -> str:
    """An image argument (a path or a sample name) as a file-name stem."""
    return slug(Path(source).stem.removeprefix("sample:"))


def interrupted(message: str) -> None:
    """Say what Ctrl-C left: the output staging's summary, or that nothing was written yet."""
    print(f"convlens: interrupted: {message or 'nothing written'}", file=sys.stderr)


def out_dir(path: str) -> Path:
    """``--out`` as a folder, created now (commands that stage their files use cli.output)."""
    out = check_output_path(path, "--out", folder=True)
    out.mkdir(parents=True, exist_ok=True)
    return out
