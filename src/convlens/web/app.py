"""The explorer's web app: a FastAPI factory serving a small JSON API and plain HTML/JS.

Model calls run in worker threads (``run_in_threadpool``), one at a time per model, so the event
loop keeps answering while a model works. Images live in memory under random ids; nothing the
browser sends is ever used as a file-system path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..activations import empty_channels
from ..activations.grid import IMAGES_PER_ROW
from ..errors import ConvlensError, ImageError, LayerNotFoundError
from ..images import SAMPLES, sample_image
from ..models import Model, load_model
from ..render import data_uri, jpeg_bytes
from .jobs import FilterJobs
from .slots import ModelSlot
from .store import ImageStore, StoredImage, UploadTooLarge, decode_upload

__all__ = ["create_app"]

#: Default upload limit: 10 MB.
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: Default pixel limit of an upload (decompression bombs).
MAX_UPLOAD_PIXELS = 40_000_000
#: Room for the multipart envelope around the file.
ENVELOPE_BYTES = 64 * 1024
UPLOAD_PATH = "/api/images"
PNG = "image/png"
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
        detail = _too_large(self.limit - ENVELOPE_BYTES)
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
    if isinstance(err, LayerNotFoundError):
        return 404
    if isinstance(err, ImageError):
        return 415
    return 400


def _too_large(limit: int) -> str:
    return f"the upload is over the {limit / 2**20:.0f} MB limit; upload a smaller image"


def create_app(
    models: Mapping[str, Model] | Model | None = None,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_upload_pixels: int = MAX_UPLOAD_PIXELS,
    max_images: int = 64,
) -> FastAPI:
    """The explorer app for ``models`` (default: the built-in model), by name."""
    if models is None:
        models = load_model()
    if isinstance(models, Model):
        models = {models.name: models}
    if not models:
        raise ConvlensError("the explorer needs at least one model")
    slots = {name: ModelSlot(name, model) for name, model in models.items()}
    for slot in slots.values():
        slot.model.layers()  # traced now, so requests only look names up
    store = ImageStore(max_images)
    jobs = FilterJobs()
    app = FastAPI(title="convlens explorer", docs_url="/api/docs", redoc_url=None)
    app.add_middleware(UploadLimit, limit=max_upload_bytes + ENVELOPE_BYTES)
    app.state.slots, app.state.store, app.state.jobs = slots, store, jobs
    static = resources.files("convlens.web") / "static"

    @app.exception_handler(ConvlensError)
    async def convlens_error(request: Request, err: ConvlensError) -> JSONResponse:
        return JSONResponse({"detail": str(err)}, status_code=_status(err))

    def slot_for(name: str | None) -> ModelSlot:
        if name is None:
            return next(iter(slots.values()))
        if name not in slots:
            raise HTTPException(404, f"no model {name!r} here; the models are {', '.join(slots)}")
        return slots[name]

    def image_for(image_id: str) -> StoredImage:
        image = store.get(image_id)
        if image is None:
            raise HTTPException(
                404, "unknown image id (the explorer keeps only recent images); upload it again"
            )
        return image

    async def work(fn: Callable[..., Any], *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    def describe(image: StoredImage) -> dict[str, Any]:
        h, w = image.pixels.shape[:2]
        return {"id": image.id, "name": image.name, "width": w, "height": h,
                "url": f"/api/images/{image.id}.jpg"}

    # -- pages ------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        with resources.as_file(static / "index.html") as path:
            return FileResponse(path, headers=NO_STORE)

    with resources.as_file(static) as folder:
        app.mount("/static", StaticFiles(directory=folder), name="static")

    # -- facts ------------------------------------------------------------------------------
    @app.get("/api/models")
    async def list_models() -> dict[str, Any]:
        from ..cam import METHODS
        from ..filters import RECIPES

        described = await work(lambda: [slot.call(slot.describe) for slot in slots.values()])
        return {
            "models": described,
            "cam_methods": list(METHODS), "filter_recipes": list(RECIPES),
            "max_upload_bytes": max_upload_bytes,
        }

    @app.get("/api/samples")
    async def list_samples() -> list[dict[str, str]]:
        return [{"name": name, "description": text} for name, text in SAMPLES.items()]

    @app.get("/api/layers")
    async def list_layers(model: str | None = None) -> list[dict[str, Any]]:
        slot = slot_for(model)
        return await work(lambda: slot.call(slot.layers))

    # -- images -----------------------------------------------------------------------------
    @app.post(UPLOAD_PATH, status_code=201)
    async def upload(file: UploadFile = File(...)) -> dict[str, Any]:  # noqa: B008
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, _too_large(max_upload_bytes))
        pixels = await work(decode_upload, data, max_upload_pixels)
        name = (file.filename or "upload").rsplit("/", 1)[-1].rsplit("\\", 1)[-1][:80]
        return describe(store.add(pixels, name))

    @app.post("/api/images/sample/{name}", status_code=201)
    async def add_sample(name: str) -> dict[str, Any]:
        if name not in SAMPLES:
            raise HTTPException(404, f"no sample {name!r}; the samples are {', '.join(SAMPLES)}")
        return describe(store.add(await work(sample_image, name), name))

    @app.get("/api/images/{image_id}.jpg")
    async def image_file(image_id: str) -> Response:
        image = image_for(image_id)
        return Response(await work(jpeg_bytes, image.pixels), media_type="image/jpeg")

    @app.get("/api/images/{image_id}/predictions")
    async def predictions(
        image_id: str, model: str | None = None, top: int = Query(5, ge=1, le=100)
    ) -> dict[str, Any]:
        image, slot = image_for(image_id), slot_for(model)
        answer = await work(slot.predictions, image, top)
        return {"image": image.id, "name": image.name, "model": slot.name, "predictions": answer}

    # -- activations ------------------------------------------------------------------------
    @app.get("/api/images/{image_id}/activations/{layer:path}/channels/{channel}.png")
    async def channel_png(
        image_id: str, layer: str, channel: int, model: str | None = None
    ) -> Response:
        image, slot = image_for(image_id), slot_for(model)
        info = slot.layer(layer)
        if not 0 <= channel < (info.channels or 0):
            raise HTTPException(
                404, f"{layer} has {info.channels} channels; channel {channel} does not exist"
            )
        data = await work(slot.channel_png, image, info, channel)
        return Response(data, media_type=PNG)

    @app.get("/api/images/{image_id}/activations/{layer:path}.png")
    async def grid_png(image_id: str, layer: str, model: str | None = None) -> Response:
        image, slot = image_for(image_id), slot_for(model)
        info = _spatial(slot, layer)
        return Response(await work(slot.grid_png, image, info), media_type=PNG)

    @app.get("/api/images/{image_id}/activations/{layer:path}")
    async def activation_facts(
        image_id: str, layer: str, model: str | None = None
    ) -> dict[str, Any]:
        image, slot = image_for(image_id), slot_for(model)
        info = _spatial(slot, layer)
        acts = await work(slot.activations, image, info)
        empty = list(empty_channels({info.name: acts})[0].channels)
        h, w, c = acts.shape
        return {
            "layer": info.name, "kind": info.kind, "type": info.type, "shape": [h, w, c],
            "cell": [h, w], "per_row": min(IMAGES_PER_ROW, c), "channels": c, "empty": empty,
            "grid": f"/api/images/{image.id}/activations/{quote(info.name)}.png",
        }

    # -- class activation maps --------------------------------------------------------------
    @app.get("/api/images/{image_id}/cam")
    async def cam(
        image_id: str, method: str = "gradcam", target: int | None = None,
        layer: str | None = None, model: str | None = None,
    ) -> dict[str, Any]:
        from ..cam import METHODS

        image, slot = image_for(image_id), slot_for(model)
        if method not in METHODS:
            raise HTTPException(
                400, f"unknown CAM method {method!r}; use one of {', '.join(METHODS)}"
            )
        facts = await work(slot.cam, image, method, target, layer)
        facts["image"] = data_uri(facts.pop("jpeg"))
        return facts

    # -- filters ----------------------------------------------------------------------------
    @app.post("/api/filters/{layer:path}", status_code=202)
    async def start_filters(
        layer: str, model: str | None = None, recipe: str = "chollet",
        channels: int = Query(16, ge=1, le=64),
    ) -> dict[str, Any]:
        from ..filters import RECIPES

        slot = slot_for(model)
        if recipe not in RECIPES:
            raise HTTPException(400, f"unknown recipe {recipe!r}; use one of {', '.join(RECIPES)}")
        info = slot.layer(layer)
        wanted = list(range(min(channels, info.channels or 0)))
        return jobs.submit(slot, info, recipe, wanted).describe()

    @app.get("/api/jobs/{job_id}")
    async def job_status(job_id: str) -> dict[str, Any]:
        return _job(jobs, job_id).describe()

    @app.get("/api/jobs/{job_id}/grid.png")
    async def job_grid(job_id: str) -> Response:
        job = _job(jobs, job_id)
        if job.png is None:
            raise HTTPException(409, f"job {job_id} is {job.status}; poll /api/jobs/{job_id}")
        return Response(job.png, media_type=PNG)

    return app


def _spatial(slot: ModelSlot, name: str) -> Any:
    info = slot.layer(name)
    if not info.spatial:
        raise HTTPException(
            400, f"{info.name} has output shape {info.output_shape}, not a (H, W, C) map; "
            "pick a conv or pooling layer"
        )
    return info


def _job(jobs: FilterJobs, job_id: str) -> Any:
    job = jobs.get(job_id)
    if job is None:
        raise HTTPException(
            404, f"no filter job {job_id!r}; start one with POST /api/filters/LAYER"
        )
    return job
