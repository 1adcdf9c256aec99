"""``convlens layers``: every layer of a model, with its kind and output shape."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table

from ..models.layers import KINDS
from .common import add_model_option, model_from_args


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("layers", help="list a model's layers (name, kind, output shape)")
    add_model_option(parser)
    parser.add_argument("--kind", action="append", choices=KINDS,
                        help="only layers of this kind (repeatable)")
    parser.add_argument("--blocks", action="store_true", help="also list container blocks")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model = model_from_args(args)
    infos = model.layers(include_blocks=args.blocks)
    if args.kind:
        infos = [i for i in infos if i.kind in args.kind]
    table = Table(title=repr(model), title_justify="left", show_edge=False)
    for column in ("#", "name", "kind", "type", "output (N, H, W, C)"):
        table.add_column(column)
    for n, info in enumerate(infos):
        shape = "?" if info.output_shape is None else str(tuple(info.output_shape))
        table.add_row(str(n), info.name, info.kind, info.type, shape)
    Console(width=160).print(table)
    return 0
