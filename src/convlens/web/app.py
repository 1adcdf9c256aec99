"""The explorer's web app: a FastAPI factory serving a small JSON API and plain HTML/JS.

The routes live in :mod:`convlens.web.routes`, one router per resource. Model calls run on each
model's worker thread and heavy work in the job queue, so the event loop keeps answering. Images
live in memory under random ids; nothing the browser sends is ever used as a file-system path.
Only requests addressed to this server's own names, from its own page, are obeyed
(:mod:`convlens.web.security`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from importlib import resources

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import ConvlensError, ImageError, LayerNotFoundError
from ..models import Model, load_model
from ..report.atlas import AtlasPages
from ..report.atlas import scan_model as find_scan_model
from ..scan import ScanResult
from .jobs import JobQueue, QueueFull
from .routes import ROUTERS
from .routes.images import UPLOAD_PATH
from .scan import ScanView
from .security import HostOriginGuard, allowed_hosts
from .slots import ModelSlot
from .state import Explorer
from .store import ImageStore, UploadTooLarge, too_large
from .workers import Busy, Worker

__all__ = ["create_app"]

#: Default upload limit: 10 MB.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Default pixel limit of an upload (decompression bombs).
MAX_UPLOAD_PIXELS = 40_000_000
#: Room for the multipart envelope around the file.
ENVELOPE_BYTES = 64 * 1024
NO_STORE = {"Cache-Control": "no-store"}


class UploadLimit:
    """ASGI middleware: a 413 (JSON ``detail``) for uploads over the limit, before reading them."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != UPLOAD_PATH:
            await self.app(scope, receive, send)
            return
        detail = too_large(self.limit - ENVELOPE_BYTES)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            response = JSONResponse({"detail": detail}, status_code=413)
            await response(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise HTTPException(status_code=413, detail=detail)
            return message

        await self.app(scope, limited, send)


def _status(err: ConvlensError) -> int:
    """The HTTP status of a convlens error."""
    if isinstance(err, UploadTooLarge):
        return 413
    if isinstance(err, (Busy, QueueFull)):
        return 429
    if isinstance(err, LayerNotFoundError):
        return 404
    if isinstance(err, ImageError):
        return 415
    return 400


def _one_line(err: RequestValidationError) -> str:
    parts = []
    for problem in err.errors():
        where = ".".join(str(p) for p in problem.get("loc", ())[1:]) or "request"
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def create_app(
    models: Mapping[str, Model] | Model | None = None,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_upload_pixels: int = MAX_UPLOAD_PIXELS,
    max_images: int = 64,
    host: str = "127.0.0.1",
    port: int | None = None,
    extra_hosts: Iterable[str] = (),
    job_capacity: int = 8,
    scan: str | os.PathLike | ScanResult | None = None,
    scan_model: str | None = None,
    scan_note: str = "",
) -> FastAPI:
    """The explorer app for ``models`` (default: the built-in model, or none with a scan), by
    name; with ``scan`` (a scan folder) it also serves that scan's channel atlas at ``/scan/``.

    It answers requests addressed to ``host`` (the address it is served on; loopback names
    always) on ``port`` (None: any port) and to the ``extra_hosts`` names (``"*"``: any name).
    At most ``job_capacity`` heavy jobs wait or run at once. ``scan_model``: the name of the
    scan's model among ``models`` (it draws the atlas's filter pictures); without it and
    without ``scan_note``, the model file the scan recorded is served, if it loads unchanged
    (``report.atlas.scan_model``); else the atlas says why there are no filter pictures.
    """
    pages = None if scan is None else AtlasPages(scan)  # not a scan folder: one line, now
    if models is None:
        models = load_model() if pages is None else {}
    if isinstance(models, Model):
        models = {models.name: models}
    if pages is not None and scan_model is None and not scan_note:
        found, scan_note = find_scan_model(pages.result)  # the model file the scan recorded
        if found is not None:
            models = {**models, found.name: found}
            scan_model = found.name
    if not models and pages is None:
        raise ConvlensError("the explorer needs at least one model")
    if scan_model is not None and scan_model not in models:
        raise ConvlensError(f"scan_model {scan_model!r} is not one of the models served")
    slots = {name: ModelSlot(name, model) for name, model in models.items()}
    explorer = Explorer(
        slots=slots, store=ImageStore(max_images), jobs=JobQueue(job_capacity),
        images=Worker("convlens-images", threads=2, max_pending=64),
        max_upload_bytes=max_upload_bytes, max_upload_pixels=max_upload_pixels,
        scan=None if pages is None else ScanView(
            pages, None if scan_model is None else slots[scan_model], scan_note
        ),
    )
    app = FastAPI(title="convlens explorer", docs_url="/api/docs", redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.add_middleware(UploadLimit, limit=max_upload_bytes + ENVELOPE_BYTES)
    app.add_middleware(HostOriginGuard, allowed=allowed_hosts(host, port, extra_hosts))
    app.state.explorer = explorer
    app.state.slots, app.state.jobs = explorer.slots, explorer.jobs

    @app.exception_handler(ConvlensError)
    async def convlens_error(request: Request, err: ConvlensError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=_status(err))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(err)}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        # The server keeps serving; the client gets one line, the log the traceback.
        return JSONResponse(
            {"detail": f"internal error ({type(err).__name__}); the explorer keeps running"},
            status_code=500,
        )

    for router in ROUTERS:
        app.include_router(router)

    static = resources.files("convlens.web") / "static"

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        if not explorer.slots:  # only a scan is served
            return RedirectResponse("/scan/")
        with resources.as_file(static / "index.html") as path:
            return FileResponse(path, headers=NO_STORE)

    with resources.as_file(static) as folder:
        app.mount("/static", StaticFiles(directory=folder), name="static")
    return app
