"""``convlens serve``: the explorer, a local web app (http://127.0.0.1:8000 by default)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import ConvlensError
from ..models import DEFAULT_MODEL
from .common import UsageError, add_model_option, model_from_args


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("serve", help="start the explorer, a local web app")
    add_model_option(parser, repeat=True)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (127.0.0.1: this machine only; 0.0.0.0: everyone)")
    parser.add_argument("--port", type=_port, default=8000, help="port (8000)")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME[:PORT]",
                        help="another name the explorer is reached by (e.g. this machine's LAN "
                        "name with --host 0.0.0.0); repeatable; '*' accepts any")
    parser.add_argument("--max-upload-mb", type=float, default=10.0,
                        help="largest accepted upload, in MB (10)")
    parser.add_argument("--scan", default=None, metavar="DIR",
                        help="also browse this `convlens scan` folder's channel atlas (/scan/); "
                        "its model (--model, or the file the scan recorded) draws its filters")
    parser.set_defaults(func=run)


def _label(source: str, taken: dict) -> str:
    name = Path(source).stem if source != DEFAULT_MODEL else source
    label, n = name, 2
    while label in taken:
        label, n = f"{name}-{n}", n + 1
    return label


def run(args: argparse.Namespace) -> int:
    try:
        from ..web.server import bind, serve
    except ImportError as err:  # pragma: no cover - only without the web extra
        raise ConvlensError(
            f"the explorer needs FastAPI and uvicorn ({err.name} is missing); "
            "pip install 'convlens[web]'"
        ) from None
    if not 0 < args.max_upload_mb < 2**20:
        raise ConvlensError(f"--max-upload-mb is a size in MB above 0, not {args.max_upload_mb}")
    result = None
    if args.scan:
        from ..scan import ScanResult

        result = ScanResult(args.scan)  # not a finished scan folder: one line, no server
        if args.model and len(args.model) > 1:
            raise UsageError("with --scan, give one --model: the scan's (it draws the filters)")
    sock = bind(args.host, args.port)  # a port in use is said now, before the models load
    try:
        models: dict = {}
        options: dict = {}
        if result is not None:
            options = _scan_options(args, result, models)
        else:
            for source in args.model or [DEFAULT_MODEL]:
                models[_label(source, models)] = model_from_args(args, source)
        page = "scan/" if result is not None else ""
        serve(models, host=args.host, sock=sock, allowed_hosts=args.allowed_host,
              max_upload_bytes=int(args.max_upload_mb * 2**20), **options,
              ready=lambda url: print(f"convlens explorer: {url}{page}  (Ctrl+C to stop)",
                                      flush=True))
    finally:
        sock.close()
    return 0


def _scan_options(args: argparse.Namespace, result: Any, models: dict) -> dict[str, Any]:
    """The scan's model (given, or the file the scan recorded) into ``models``; the options of
    ``serve`` for the scan."""
    from ..report.atlas import scan_model

    given = model_from_args(args, args.model[0]) if args.model else None
    model, note = scan_model(result, given, trust=args.trust_model_file)
    name = None
    if model is not None:
        name = _label(args.model[0] if args.model else model.name, models)
        models[name] = model
    if note:
        print(f"convlens explorer: {note}", flush=True)
    return {"scan": result, "scan_model": name, "scan_note": note}
