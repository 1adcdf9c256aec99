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

#: Subcommand modules, in the order ``convlens --help`` lists them.
COMMANDS = ("layers", "activations", "cam", "filters", "report", "serve", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        print(f"convlens: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
