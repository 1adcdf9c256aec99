"""Facts that never wait for a model: the models, the sample photos, the layers."""

from __future__ import annotations

from fastapi import APIRouter

from ...cam import METHODS
from ...filters import RECIPES
from ...images import SAMPLES
from ..schemas import LayerRow, ModelsAnswer, Sample
from ..state import ExplorerDep

router = APIRouter(prefix="/api", tags=["models"])


@router.get("/models")
async def list_models(explorer: ExplorerDep) -> ModelsAnswer:
    """The served models (described once, at startup), CAM methods, filter recipes, limits."""
    return ModelsAnswer(
        models=[slot.facts for slot in explorer.slots.values()],
        cam_methods=list(METHODS),
        cam_jobs=[name for name, cls in METHODS.items() if cls.quick_options],
        filter_recipes=list(RECIPES), max_upload_bytes=explorer.max_upload_bytes,
    )


@router.get("/samples")
async def list_samples() -> list[Sample]:
    return [Sample(name=name, description=text) for name, text in SAMPLES.items()]


@router.get("/layers")
async def list_layers(explorer: ExplorerDep, model: str | None = None) -> list[LayerRow]:
    """A model's layers with a channel grid (listed at startup)."""
    return explorer.slot(model).spatial_layers
