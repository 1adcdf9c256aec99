"""Views of an image: activation grids and channels, and class activation maps.

Gradient CAMs (about one forward pass) are answered directly; Score-CAM and Ablation-CAM (one
forward pass per channel) run as jobs: ``POST /api/images/ID/cam``, then poll ``/api/jobs/JOB``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from ...activations import empty_channels
from ...activations.grid import IMAGES_PER_ROW
from ..schemas import ActivationFacts, CamFacts, CamRequest, JobInfo
from ..slots import ModelSlot, cam_method, check_cam_layer
from ..state import Explorer, ExplorerDep

router = APIRouter(prefix="/api/images/{image_id}", tags=["views"])
PNG = "image/png"


def _spatial(slot: ModelSlot, name: str) -> Any:
    info = slot.layer(name)
    if not info.spatial:
        raise HTTPException(
            400, f"{info.name} has output shape {info.output_shape}, not a (H, W, C) map; "
            "pick a conv or pooling layer"
        )
    return info


# -- activations ----------------------------------------------------------------------------
@router.get("/activations/{layer:path}/channels/{channel}.png")
async def channel_png(
    explorer: ExplorerDep, image_id: str, layer: str, channel: int, model: str | None = None
) -> Response:
    """One channel of a layer, enlarged and coloured."""
    image, slot = explorer.image(image_id), explorer.slot(model)
    info = _spatial(slot, layer)
    if not 0 <= channel < (info.channels or 0):
        raise HTTPException(
            404, f"{info.name} has {info.channels} channels; channel {channel} does not exist"
        )
    return Response(await slot.run(slot.channel_png, image, info, channel), media_type=PNG)


@router.get("/activations/{layer:path}.png")
async def grid_png(
    explorer: ExplorerDep, image_id: str, layer: str, model: str | None = None
) -> Response:
    """A layer's channel grid (the book's picture)."""
    image, slot = explorer.image(image_id), explorer.slot(model)
    info = _spatial(slot, layer)
    return Response(await slot.run(slot.grid_png, image, info), media_type=PNG)


@router.get("/activations/{layer:path}")
async def activation_facts(
    explorer: ExplorerDep, image_id: str, layer: str, model: str | None = None
) -> ActivationFacts:
    """A layer's shape, its empty channels and the address of its grid."""
    image, slot = explorer.image(image_id), explorer.slot(model)
    info = _spatial(slot, layer)
    acts = await slot.run(slot.activations, image, info)
    h, w, c = acts.shape
    return ActivationFacts(
        layer=info.name, kind=info.kind, type=info.type, shape=[h, w, c], cell=[h, w],
        per_row=min(IMAGES_PER_ROW, c), channels=c,
        empty=list(empty_channels({info.name: acts})[0].channels),
        grid=f"/api/images/{image.id}/activations/{quote(info.name)}.png",
    )


# -- class activation maps ------------------------------------------------------------------
def _checked(explorer: Explorer, request: CamRequest) -> tuple[ModelSlot, str, bool]:
    """The model, the canonical method and whether it is heavy; every error before any work."""
    slot = explorer.slot(request.model)
    method, heavy = cam_method(request.method)
    classes = slot.facts["classes"]
    if request.target is not None and classes is not None and request.target >= classes:
        raise HTTPException(
            400, f"target {request.target} is not a class of {slot.name}; use 0..{classes - 1}"
        )
    check_cam_layer(slot.model, request.layer)
    return slot, method, heavy


def _query_method(method: str) -> str:
    # In a query string "+" means a space: "gradcam++" arrives as "gradcam  ". Trailing spaces
    # are never part of a name, so they are read back as the "+" they were.
    return re.sub(r" +$", lambda m: "+" * len(m.group()), method)


@router.get("/cam")
async def cam(
    explorer: ExplorerDep, image_id: str, request: Annotated[CamRequest, Query()]
) -> CamFacts:
    """A class activation map (gradient methods, Eigen-CAM); heavy methods answer 409."""
    request = request.model_copy(update={"method": _query_method(request.method)})
    image = explorer.image(image_id)
    slot, method, heavy = _checked(explorer, request)
    if heavy:
        raise HTTPException(
            409, f"{method} runs one forward pass per channel, as a job: POST this address "
            f"(/api/images/{image.id}/cam) with the same parameters, then poll /api/jobs/ID"
        )
    return await slot.run(slot.cam, image, method, request.target, request.layer)


@router.post("/cam", status_code=202)
async def start_cam(explorer: ExplorerDep, image_id: str, request: CamRequest) -> JobInfo:
    """Any CAM method as a job (the way Score-CAM and Ablation-CAM run): poll /api/jobs/ID."""
    image = explorer.image(image_id)
    slot, method, _ = _checked(explorer, request)
    target, layer = request.target, request.layer
    job = explorer.jobs.submit(
        key=("cam", slot.name, image.id, method, target, layer), kind="cam", model=slot.name,
        params={"image": image.id, "method": method, "target": target, "layer": layer},
        work=lambda job: (slot.cam(image, method, target, layer, progress=job.advance), None),
    )
    return job.describe()
