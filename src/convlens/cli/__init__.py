"""The ``convlens`` command: thin subcommands that parse, call the API and print.

Each subcommand lives in its own module with a ``register(subparsers)`` function.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from ..errors import ConvlensError
from ..runtime import tune_allocator
from .common import OneLineParser, interrupted

#: Subcommand modules, in the order ``convlens --help`` lists them.
COMMANDS = ("layers", "activations", "cam", "filters", "report", "serve", "scan", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="convlens",
        description="See what a convnet has learned: activations, filters, class heatmaps.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()  # this process: keep freed activation memory (see convlens.runtime)
    try:
        return int(args.func(args) or 0)
    except ConvlensError as err:
        print(f"convlens: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:  # the disk, permissions: not a bug of convlens, so no traceback
        print(f"convlens: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except MemoryError:
        print("convlens: error: out of memory; use fewer or smaller images, or --batch-size",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # the output staging says what was written (cli.output)
        interrupted(str(err))
        return 130


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


if __name__ == "__main__":
    sys.exit(main())
