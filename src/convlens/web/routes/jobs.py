"""Jobs: filter galleries (and heavy CAMs, started from /api/images/ID/cam), their state,
cancellation and pictures."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response

from ...filters import RECIPES
from ...filters.recipes import get_recipe
from ..jobs import Job
from ..schemas import JobInfo
from ..slots import FILTER_CHUNK
from ..state import Explorer, ExplorerDep

router = APIRouter(prefix="/api", tags=["jobs"])


def _job(explorer: Explorer, job_id: str) -> Job:
    job = explorer.jobs.get(job_id)
    if job is None:
        raise HTTPException(
            404, f"no job {job_id[:100]!r} (finished jobs are kept a while); start it again"
        )
    return job


@router.post("/filters/{layer:path}", status_code=202)
async def start_filters(
    explorer: ExplorerDep, layer: str, model: str | None = None, recipe: str = "chollet",
    channels: int = Query(16, ge=1, le=64),
) -> JobInfo:
    """Start (or find) the filter gallery of a layer's first ``channels`` channels."""
    slot = explorer.slot(model)
    if recipe not in RECIPES:
        raise HTTPException(
            400, f"unknown recipe {recipe[:100]!r}; use one of {', '.join(RECIPES)}"
        )
    info = slot.layer(layer)
    wanted = list(range(min(channels, info.channels or 0)))
    if not wanted:
        raise HTTPException(400, f"{info.name} has no channels to visualize; pick a conv layer")
    steps = get_recipe(recipe).steps
    job = explorer.jobs.submit(
        key=("filters", slot.name, info.name, recipe, tuple(wanted)), kind="filters",
        model=slot.name, params={"layer": info.name, "recipe": recipe, "channels": wanted},
        work=lambda job: slot.filter_gallery(info.name, recipe, wanted, None, job.advance),
        total=steps * -(-len(wanted) // FILTER_CHUNK),
    )
    return job.describe()


@router.get("/jobs/{job_id}")
async def job_status(explorer: ExplorerDep, job_id: str) -> JobInfo:
    """A job's status and progress; its result once done."""
    return _job(explorer, job_id).describe()


@router.delete("/jobs/{job_id}")
async def cancel_job(explorer: ExplorerDep, job_id: str) -> JobInfo:
    """Cancel a queued or running job (a running one stops at its next step)."""
    _job(explorer, job_id)
    return explorer.jobs.cancel(job_id).describe()


@router.get("/jobs/{job_id}/grid.png")
async def job_grid(explorer: ExplorerDep, job_id: str) -> Response:
    """A finished filter job's gallery."""
    job = _job(explorer, job_id)
    if job.png is None:
        raise HTTPException(409, f"job {job.id} is {job.status}; poll /api/jobs/{job.id}")
    return Response(job.png, media_type="image/png")
