"""``scan``: what a convnet learned across a whole data set, in one resumable pass.

>>> result = cl.scan(model, "data/validation", layers="conv", top_k=9)
>>> result.dead_channels()             # {layer: [channel, ...]} never fired on any image
>>> result.top_images("conv2d_1", 37)  # the images that make channel 37 fire hardest, and where
>>> result.class_mean_cam("cats")      # (H, W) mean Grad-CAM of the class over its images
>>> result.confusion, result.mistakes()
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..models import register_view
from .engine import ENGINES, RANKS, check_out, execute, plan_scan
from .result import ScanResult
from .sources import ScanError, open_source

if TYPE_CHECKING:
    from ..models import Model

__all__ = [
    "ENGINES", "RANKS", "ScanError", "ScanResult", "check_out", "execute", "open_source",
    "plan_scan", "scan",
]


@register_view("scan")
def scan(
    model: Model,
    source: Any,
    out: str | os.PathLike | None = None,
    *,
    layers: Any = "conv",
    top_k: int = 9,
    rank: str = "max",
    labels: Any = None,
    cam: bool = True,
    resume: bool = False,
    engine: str = "local",
    ray_address: str | None = None,
    batch_size: int = 32,
    shard_size: int = 1024,
    workers: int = 4,
    progress: bool = False,
    model_source: dict[str, Any] | None = None,
) -> ScanResult:
    """Scan a data set: per-channel statistics, top-k images, per-class CAMs, mistakes.

    Args:
        model: a :class:`~convlens.models.Model` (``cl.load_model(...)``); ``model.scan(source,
            ...)`` is the same call.
        source: a folder (ImageFolder: one subfolder per class; or flat), a glob, a
            ``.csv``/``.parquet`` list (``path`` and optional ``label`` columns), a list of
            paths, or an iterable of ``(images, labels)`` batches of pixels 0..255.
        out: the scan's folder (Parquet tables + manifest); None: a new temporary folder.
        layers: layers to summarize (names, globs or kinds; spatial outputs only).
        top_k: images kept per channel; ``rank``: by spatial ``"max"`` or ``"mean"``.
        labels: a CSV/Parquet of ``path,label`` (or a dict) for an unlabelled file source.
        cam: the per-class mean Grad-CAM and the mistakes' Grad-CAMs (one more backward pass).
        resume: continue the scan already in ``out`` (same model, data and parameters).
        engine: ``"local"`` (threads decode while the model runs) or ``"ray"`` (Ray Data).
        shard_size: images per committed shard (the unit of ``resume``).
        model_source: how to load the model again, for the atlas's filter pictures
            (``{"path": "my_convnet.keras", "preprocess": None, "input_size": None}``).
    """
    plan = plan_scan(
        model, source, out, layers=layers, top_k=top_k, rank=rank, labels=labels, cam=cam,
        resume=resume, batch_size=batch_size, shard_size=shard_size, workers=workers,
        model_source=model_source,
    )
    return execute(plan, engine=engine, ray_address=ray_address, progress=progress)
