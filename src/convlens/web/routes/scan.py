"""The served scan (``convlens serve --scan DIR``): the atlas pages, their facts as JSON, the
top-k strips and the filter pictures, drawn as jobs on the scan's model."""

from __future__ import annotations

import math

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import HTMLResponse, Response

from ..scan import WEB_LINKS, ScanView
from ..schemas import JobInfo, ScanChannel, ScanClass, ScanLayer, ScanLayerCards, ScanSummary
from ..state import Explorer, ExplorerDep

router = APIRouter(tags=["scan"])
JPEG = "image/jpeg"
#: Filter pictures a layer's page offers to draw (the most firing channels).
DEFAULT_FILTERS = 16


def _scan(explorer: Explorer) -> ScanView:
    if explorer.scan is None:
        raise HTTPException(404, "the explorer serves no scan; start it with convlens serve "
                                 "--scan DIR")
    return explorer.scan


def _layer(scan: ScanView, index: int) -> int:
    count = len(scan.pages.layers)
    if not 0 <= index < count:
        raise HTTPException(404, f"the scan has layers 0..{count - 1}, not {index}")
    return index


def _channel(scan: ScanView, index: int, channel: int) -> int:
    count = scan.pages.census[index]["channels"]
    if not 0 <= channel < count:
        raise HTTPException(
            404, f"layer {index} has {count} channels; channel {channel} does not exist"
        )
    return channel


def _layer_row(row: dict) -> ScanLayer:
    return ScanLayer(**{k: row[k] for k in ("index", "name", "channels", "active", "rare",
                                            "dead")}, page=WEB_LINKS.layer(row["index"]))


# -- pages -------------------------------------------------------------------------------------
@router.get("/scan/", include_in_schema=False)
async def index_page(explorer: ExplorerDep) -> HTMLResponse:
    scan = _scan(explorer)
    return HTMLResponse(await explorer.images.run(scan.index_html))


@router.get("/scan/layers/{index}.html", include_in_schema=False)
async def layer_page(explorer: ExplorerDep, index: int) -> HTMLResponse:
    scan = _scan(explorer)
    page = await explorer.images.run(scan.layer_html, _layer(scan, index), DEFAULT_FILTERS)
    return HTMLResponse(page)


# -- facts -------------------------------------------------------------------------------------
@router.get("/api/scan")
async def summary(explorer: ExplorerDep) -> ScanSummary:
    """The scan's facts, its per-layer census and classes."""
    scan = _scan(explorer)
    result = scan.pages.result
    manifest = result.manifest
    images = result.images
    labelled = images[images["label"] >= 0]
    classes = [
        ScanClass(index=int(row["class"]), name=str(row["name"]), images=int(row["images"]),
                  accuracy=float(row["accuracy"]))
        for row in result.classes[["class", "name", "images", "accuracy"]].to_dict("records")
    ]
    return ScanSummary(
        model=str(manifest["model"].get("name")), images=len(images),
        skipped=len(result.skipped), accuracy=result.accuracy,
        top_k=manifest["parameters"]["top_k"], rank=manifest["parameters"]["rank"],
        mistakes=int((~labelled["correct"]).sum()),
        filters=scan.slot is not None, filter_note=scan.note,
        layers=[_layer_row(row) for row in scan.pages.census], classes=classes,
    )


@router.get("/api/scan/layers/{index}")
async def layer_cards(explorer: ExplorerDep, index: int) -> ScanLayerCards:
    """A layer's channel cards: statistics, top-k values, strip and filter addresses."""
    scan = _scan(explorer)
    index = _layer(scan, index)
    drawn = set(scan.drawn(index))
    cards = [
        ScanChannel(
            **{k: card[k] for k in ("channel", "dead", "rare", "values")},
            **{k: _finite(card[k]) for k in ("firing_rate", "mean", "max")},
            strip=WEB_LINKS.strip(index, card["channel"]) if card["values"] else None,
            filter=WEB_LINKS.filter(index, card["channel"]) if card["channel"] in drawn else None,
        )
        for card in scan.pages.cards(index)
    ]
    return ScanLayerCards(layer=_layer_row(scan.pages.census[index]), cards=cards,
                          filter_choice=scan.pages.filter_choice(index, DEFAULT_FILTERS))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else 0.0


# -- pictures ----------------------------------------------------------------------------------
@router.get("/api/scan/layers/{index}/channels/{channel}/strip.jpg")
async def strip(explorer: ExplorerDep, index: int, channel: int) -> Response:
    """The channel's top-k images, cropped to the receptive field of their strongest position."""
    scan = _scan(explorer)
    index = _layer(scan, index)
    data = await explorer.images.run(scan.strip, index, _channel(scan, index, channel))
    if data is None:
        raise HTTPException(404, f"channel {channel} of layer {index} has no top images")
    return Response(data, media_type=JPEG)


@router.get("/api/scan/layers/{index}/channels/{channel}/filter.jpg")
async def filter_picture(explorer: ExplorerDep, index: int, channel: int) -> Response:
    """The channel's filter visualization, once a filter job drew it."""
    scan = _scan(explorer)
    index = _layer(scan, index)
    data = scan.filter_jpeg(index, _channel(scan, index, channel))
    if data is None:
        raise HTTPException(
            404, f"the filter of channel {channel} is not drawn; POST "
            f"/api/scan/layers/{index}/filters?channels={channel}"
        )
    return Response(data, media_type=JPEG)


@router.post("/api/scan/layers/{index}/filters", status_code=202)
async def start_filters(
    explorer: ExplorerDep, index: int, count: int = Query(DEFAULT_FILTERS, ge=1, le=64),
    channels: list[int] | None = Query(None, max_length=64),  # noqa: B008
) -> JobInfo:
    """Draw the filters of ``channels`` (default: the ``count`` most firing ones) as a job."""
    scan = _scan(explorer)
    index = _layer(scan, index)
    if scan.slot is None:
        raise HTTPException(409, scan.note)
    wanted = sorted({_channel(scan, index, c) for c in channels}) if channels else (
        scan.pages.filter_choice(index, count)
    )
    if not wanted:
        raise HTTPException(400, f"layer {index} has no live channel to draw")
    slot, layer = scan.slot, scan.pages.layer_name(index)
    job = explorer.jobs.submit(
        key=("scan-filters", index, tuple(wanted)), kind="filters", model=slot.name,
        params={"layer": layer, "recipe": "chollet", "channels": wanted},
        work=lambda job: scan.draw_filters(index, wanted, job.advance),
    )
    return job.describe()
