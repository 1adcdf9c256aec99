"""Images: uploads and sample photos (kept in memory under random ids), and predictions."""

from __future__ import annotations

from fastapi import APIRouter, File, HTTPException, Query, UploadFile
from fastapi.responses import Response

from ...images import SAMPLES, sample_image
from ...render import jpeg_bytes
from ..schemas import ImageInfo, Predictions
from ..state import ExplorerDep
from ..store import StoredImage, decode_upload, too_large

router = APIRouter(prefix="/api/images", tags=["images"])
UPLOAD_PATH = "/api/images"


def _info(image: StoredImage) -> ImageInfo:
    h, w = image.pixels.shape[:2]
    return ImageInfo(id=image.id, name=image.name, width=w, height=h,
                     url=f"/api/images/{image.id}.jpg")


@router.post("", status_code=201)
async def upload(explorer: ExplorerDep, file: UploadFile = File(...)) -> ImageInfo:  # noqa: B008
    """Upload an image file (PNG, JPEG, GIF, BMP, WebP, TIFF) under the size limits."""
    limit = explorer.max_upload_bytes
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, too_large(limit))
    pixels = await explorer.images.run(decode_upload, data, explorer.max_upload_pixels)
    name = (file.filename or "upload").rsplit("/", 1)[-1].rsplit("\\", 1)[-1][:80]
    return _info(explorer.store.add(pixels, name))


@router.post("/sample/{name}", status_code=201)
async def add_sample(explorer: ExplorerDep, name: str) -> ImageInfo:
    """Add one of the bundled sample photos."""
    if name not in SAMPLES:
        raise HTTPException(
            404, f"no sample {name[:100]!r}; the samples are {', '.join(SAMPLES)}"
        )
    return _info(explorer.store.add(await explorer.images.run(sample_image, name), name))


@router.get("/{image_id}.jpg")
async def image_file(explorer: ExplorerDep, image_id: str) -> Response:
    image = explorer.image(image_id)
    data = await explorer.images.run(jpeg_bytes, image.pixels)
    return Response(data, media_type="image/jpeg")


@router.get("/{image_id}/predictions")
async def predictions(
    explorer: ExplorerDep, image_id: str, model: str | None = None,
    top: int = Query(5, ge=1, le=100),
) -> Predictions:
    """The model's top classes for the image."""
    image, slot = explorer.image(image_id), explorer.slot(model)
    answer = await slot.run(slot.predictions, image, top)
    return Predictions(image=image.id, name=image.name, model=slot.name, predictions=answer)
