"""The explorer: a local web app to look inside a model, image by image.

>>> from convlens.web import BackgroundServer, create_app, serve
>>> serve({"mine": cl.load_model("model.keras")}, port=8000)     # http://127.0.0.1:8000
>>> server = BackgroundServer(model).start(); server.url          # from a notebook

FastAPI and uvicorn come with ``pip install 'convlens[web]'``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BackgroundServer", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    # Imported on first use, so ``import convlens`` never needs FastAPI.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in ("BackgroundServer", "serve"):
        from . import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
