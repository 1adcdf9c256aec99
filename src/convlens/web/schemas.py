"""The explorer API's typed requests and answers (pydantic; they make /api/docs exact)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "ActivationFacts", "CamFacts", "CamRequest", "FilterFacts", "ImageInfo", "JobInfo",
    "LayerRow", "ModelFacts", "ModelsAnswer", "PredictionRow", "Predictions", "Sample",
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
