"""The explorer API's typed requests and answers (pydantic; they make /api/docs exact)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "ActivationFacts", "CamFacts", "CamRequest", "FilterFacts", "ImageInfo", "JobInfo",
    "LayerRow", "ModelFacts", "ModelsAnswer", "PredictionRow", "Predictions", "Sample",
    "ScanChannel", "ScanClass", "ScanLayer", "ScanLayerCards", "ScanSummary",
]


class ModelFacts(BaseModel):
    name: str
    title: str
    framework: str
    input_size: list[int]
    parameters: int
    output: str
    classes: int | None


class ModelsAnswer(BaseModel):
    models: list[ModelFacts]
    cam_methods: list[str]
    #: methods that run as jobs (one forward pass per channel): POST /api/images/ID/cam
    cam_jobs: list[str]
    filter_recipes: list[str]
    max_upload_bytes: int


class Sample(BaseModel):
    name: str
    description: str


class LayerRow(BaseModel):
    name: str
    kind: str
    type: str
    output_shape: list[int]
    channels: int | None
    default: bool


class ImageInfo(BaseModel):
    id: str
    name: str
    width: int
    height: int
    url: str


class PredictionRow(BaseModel):
    index: int
    name: str
    probability: float


class Predictions(BaseModel):
    image: str
    name: str
    model: str
    predictions: list[PredictionRow]


class ActivationFacts(BaseModel):
    layer: str
    kind: str
    type: str
    shape: list[int]
    cell: list[int]
    per_row: int
    channels: int
    empty: list[int]
    grid: str


class CamRequest(BaseModel):
    """Which map: a method name or alias as ``cam()`` takes it, a class (None: the top one)."""

    method: str = Field("gradcam", max_length=64)
    target: int | None = Field(None, ge=0)
    layer: str | None = Field(None, max_length=512)
    model: str | None = Field(None, max_length=256)


class CamFacts(BaseModel):
    method: str
    layers: list[str]
    target: int
    target_name: str
    score: float
    box: list[int]
    #: the overlay with its box, a JPEG data URI
    image: str


class FilterFacts(BaseModel):
    layer: str
    recipe: str
    channels: list[int]
    size: list[int]
    per_row: int
    activation: list[float | None]
    quality: list[float | None]


class JobInfo(BaseModel):
    """A job's state; ``result`` once it is done (``grid``: its picture, for filter jobs)."""

    id: str
    kind: Literal["filters", "cam"]
    model: str
    status: Literal["queued", "running", "done", "error", "cancelled"]
    done: int
    total: int | None
    error: str | None
    result: FilterFacts | CamFacts | None
    grid: str | None
    layer: str | None = None
    recipe: str | None = None
    channels: list[int] | None = None
    image: str | None = None
    method: str | None = None
    target: int | None = None


class ScanLayer(BaseModel):
    """A scanned layer's census: channels that fire on ≥ 1 % of the images, rare ones, dead."""

    index: int
    name: str
    channels: int
    active: int
    rare: int
    dead: int
    #: the layer's page of channel cards
    page: str


class ScanClass(BaseModel):
    index: int
    name: str
    images: int
    accuracy: float


class ScanSummary(BaseModel):
    """The served scan: facts, per-layer census, classes; ``filters``: whether filter pictures
    can be drawn (the scan's model is served), else ``filter_note`` says why not."""

    model: str
    images: int
    skipped: int
    accuracy: float | None
    top_k: int
    rank: str
    mistakes: int
    filters: bool
    filter_note: str
    layers: list[ScanLayer]
    classes: list[ScanClass]


class ScanChannel(BaseModel):
    """One channel card: statistics, top-k values, its strip and (once drawn) filter picture."""

    channel: int
    firing_rate: float
    mean: float
    max: float
    dead: bool
    rare: bool
    values: list[float]
    strip: str | None
    filter: str | None


class ScanLayerCards(BaseModel):
    layer: ScanLayer
    #: the channels whose filters ``POST /api/scan/layers/I/filters`` draws by default
    filter_choice: list[int]
    cards: list[ScanChannel]
