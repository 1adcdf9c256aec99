"""Faithfulness metrics of saliency maps: does the model rely on the pixels a map highlights?

- :func:`deletion_insertion` — Petsiuk et al., "RISE: Randomized Input Sampling for Explanation
  of Black-box Models", BMVC 2018, section 4.1. Deletion removes the pixels, most salient first
  (replaced by black, or by a blurred copy), and tracks the target's probability: a good map
  makes it fall fast (low AUC). Insertion starts from a blurred image (Gaussian, sigma 5, as in
  RISE) and puts the original pixels back, most salient first: a good map makes it rise fast
  (high AUC). AUC is the trapezoid rule over the fraction of pixels changed, 0..1.
- :func:`average_drop_increase` — Chattopadhay et al., Grad-CAM++ (WACV 2018), section 5.1:
  the explanation image ``E = heatmap (.) image``; Average Drop = mean of max(0, Y - O) / Y and
  Increase in Confidence = share of images with O > Y (both in %), with Y and O the target's
  probability on the image and on E.

Every perturbed image of a batch is built on the device and run in batches without autograd.
Probabilities are ``model.probabilities`` (softmax; [1 - p, p] for a sigmoid model).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..batching import BatchSizer, max_batch
from ..errors import ModelError
from ..progress import progress_bar
from ..targets import as_logits, resolve_targets

if TYPE_CHECKING:
    from ..models import Images, Model
    from .result import CamResult

__all__ = ["average_drop_increase", "deletion_insertion", "faithfulness", "gaussian_blur"]


def gaussian_blur(pixels: torch.Tensor, sigma: float = 5.0, size: int = 11) -> torch.Tensor:
    """(N, H, W, 3) pixels blurred with a ``size`` x ``size`` Gaussian (RISE: 11, sigma 5)."""
    radius = size // 2
    x = torch.arange(-radius, radius + 1, device=pixels.device, dtype=torch.float32)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(pixels.dtype)
    images = pixels.permute(0, 3, 1, 2)
    channels = images.shape[1]
    pad = min(radius, images.shape[2] - 1, images.shape[3] - 1)
    if pad > 0:
        images = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    images = F.pad(images, (radius - pad,) * 4, mode="replicate") if pad < radius else images
    horizontal = kernel.reshape(1, 1, 1, size).expand(channels, 1, 1, size)
    vertical = kernel.reshape(1, 1, size, 1).expand(channels, 1, size, 1)
    images = F.conv2d(F.conv2d(images, horizontal, groups=channels), vertical, groups=channels)
    return images.permute(0, 2, 3, 1)


def _inputs(
    model: Model, images: Images | CamResult, heatmaps: Any, target: Any
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Pixels (N, H, W, 3), heatmaps (N, H, W) on the device, and one class index per image."""
    if hasattr(images, "heatmap") and hasattr(images, "target"):  # a CamResult
        cams = images
        images, heatmaps = cams.images, cams.heatmap if heatmaps is None else heatmaps
        target = cams.target if target is None else target
    if heatmaps is None:
        raise ModelError("pass the heatmaps to evaluate (or a CamResult)")
    pixels = model.to_pixels(images)
    heat = torch.as_tensor(heatmaps, dtype=torch.float32, device=pixels.device)
    if heat.ndim == 2:
        heat = heat[None]
    n = pixels.shape[0]
    if heat.shape != (n, *pixels.shape[1:3]):
        raise ModelError(
            f"heatmaps of shape {tuple(heat.shape)} do not match {n} image(s) of "
            f"{tuple(pixels.shape[1:3])}; pass (N, H, W) maps at the images' resolution"
        )
    with model.logit_outputs():
        logits = as_logits(model, model.logits(pixels))
    plan = resolve_targets(model, target, logits)
    if plan.k != 1:
        raise ModelError(
            f"metrics score one class per image, not {target!r}; pass one class per image"
        )
    indices = [t.index for t in plan.round(0)]
    if any(i < 0 for i in indices):
        raise ModelError(
            "metrics need class targets (an index or a class name per image); "
            "a callable target has no class probability"
        )
    return pixels, heat, indices


def _probabilities(model: Model, batch: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    return model.probabilities(batch).gather(1, classes[:, None])[:, 0]


def deletion_insertion(
    model: Model,
    images: Images | CamResult,
    heatmaps: Any = None,
    target: Any = None,
    *,
    steps: int = 50,
    substrate: str = "black",
    batch_size: int | None = None,
    memory_budget: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """RISE deletion and insertion AUCs of each heatmap for its target class.

    ``steps`` steps of ``ceil(H*W / steps)`` pixels each; ``substrate`` is what deleted pixels
    become: ``"black"`` (0) or ``"blur"``. Returns ``deletion`` and ``insertion`` (N,) AUCs,
    their curves (N, steps + 1) and the ``fractions`` (steps + 1,).
    """
    pixels, heat, indices = _inputs(model, images, heatmaps, target)
    return _deletion_insertion(
        model, pixels, heat, indices, steps, substrate, batch_size, memory_budget, progress
    )


def _deletion_insertion(
    model: Model, pixels: torch.Tensor, heat: torch.Tensor, indices: list[int], steps: int,
    substrate: str, batch_size: int | None, memory_budget: int | None, progress: bool,
    image_index: list[int] | None = None,
) -> dict[str, Any]:
    """``image_index[r]``: the image (row of ``pixels``) map r explains; default map r, image r."""
    if steps < 1:
        raise ModelError(f"steps must be at least 1, not {steps}")
    if substrate not in ("black", "blur"):
        raise ModelError(f"substrate must be 'black' or 'blur', not {substrate!r}")
    n, h, w = heat.shape
    area = h * w
    per_step = math.ceil(area / steps)
    counts = torch.clamp(torch.arange(steps + 1, device=pixels.device) * per_step, max=area)
    fractions = counts.float() / area
    order = heat.reshape(n, -1).argsort(dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(area, device=order.device).expand(n, area))
    rank = rank.reshape(n, h, w)
    blurred = gaussian_blur(pixels)
    removed = torch.zeros_like(pixels) if substrate == "black" else blurred
    source = torch.arange(n, device=pixels.device) if image_index is None else torch.as_tensor(
        image_index, device=pixels.device)
    # job j: map j // (2 * (steps + 1)); curve 0 = deletion, 1 = insertion; step.
    jobs = n * 2 * (steps + 1)
    curves = torch.empty(jobs, device=pixels.device)
    classes = torch.tensor(indices, device=pixels.device)
    sizer = BatchSizer(jobs, max_batch(model, (h, w), memory_budget), pixels.device, batch_size)
    with progress_bar("deletion / insertion", jobs, progress) as advance:
        for start, stop in sizer:
            job = torch.arange(start, stop, device=pixels.device)
            row = job // (2 * (steps + 1))
            curve, step = (job // (steps + 1)) % 2, job % (steps + 1)
            changed = (rank[row] < counts[step][:, None, None])[..., None]
            image = source[row]
            deleted = torch.where(changed, removed[image], pixels[image])
            inserted = torch.where(changed, pixels[image], blurred[image])
            batch = torch.where((curve == 0)[:, None, None, None], deleted, inserted)
            curves[start:stop] = _probabilities(model, batch, classes[row])
            advance(stop - start)
    curves = curves.reshape(n, 2, steps + 1)
    auc = torch.trapezoid(curves, fractions, dim=2)
    return {
        "deletion": auc[:, 0].cpu().numpy(),
        "insertion": auc[:, 1].cpu().numpy(),
        "deletion_curve": curves[:, 0].cpu().numpy(),
        "insertion_curve": curves[:, 1].cpu().numpy(),
        "fractions": fractions.cpu().numpy(),
        "target": indices,
    }


def average_drop_increase(
    model: Model,
    images: Images | CamResult,
    heatmaps: Any = None,
    target: Any = None,
    *,
    batch_size: int | None = None,
    memory_budget: int | None = None,
) -> dict[str, Any]:
    """Average Drop and Increase in Confidence (Grad-CAM++ paper), in percent.

    Returns ``average_drop`` and ``increase_in_confidence`` (floats, %), and per image ``drop``
    (fraction), ``confidence`` (Y) and ``explanation_confidence`` (O).
    """
    pixels, heat, indices = _inputs(model, images, heatmaps, target)
    return _average_drop_increase(model, pixels, heat, indices, batch_size, memory_budget)


def _average_drop_increase(
    model: Model, pixels: torch.Tensor, heat: torch.Tensor, indices: list[int],
    batch_size: int | None, memory_budget: int | None, image_index: list[int] | None = None,
) -> dict[str, Any]:
    """``image_index[r]``: the image map r explains (default: image r); Y is computed once per
    image and class."""
    classes = torch.tensor(indices, device=pixels.device)
    n = heat.shape[0]
    source = list(range(n)) if image_index is None else [int(i) for i in image_index]
    pairs = list(dict.fromkeys(zip(source, indices)))  # (image, class): Y once for each
    where = {pair: j for j, pair in enumerate(pairs)}
    image_of = torch.tensor(source, device=pixels.device)
    limit = max_batch(model, tuple(pixels.shape[1:3]), memory_budget)
    confidence = torch.empty(len(pairs), device=pixels.device)
    pair_images = torch.tensor([i for i, _ in pairs], device=pixels.device)
    pair_classes = torch.tensor([c for _, c in pairs], device=pixels.device)
    for start, stop in BatchSizer(len(pairs), limit, pixels.device, batch_size or limit):
        confidence[start:stop] = _probabilities(
            model, pixels[pair_images[start:stop]], pair_classes[start:stop])
    full = confidence[torch.tensor([where[p] for p in zip(source, indices)],
                                   device=pixels.device, dtype=torch.long)]
    explained = torch.empty(n, device=pixels.device)
    for start, stop in BatchSizer(n, limit, pixels.device, batch_size or limit):
        part = slice(start, stop)
        masked = pixels[image_of[part]] * heat[part, ..., None].to(pixels.dtype)
        explained[part] = _probabilities(model, masked, classes[part])
    drop = (full - explained).clamp_min(0) / full.clamp_min(1e-12)
    return {
        "average_drop": float(drop.mean() * 100),
        "increase_in_confidence": float((explained > full).float().mean() * 100),
        "drop": drop.cpu().numpy(),
        "confidence": full.cpu().numpy(),
        "explanation_confidence": explained.cpu().numpy(),
        "target": indices,
    }


def faithfulness(
    model: Model, cams: CamResult, *, steps: int = 50, progress: bool = False
) -> dict[str, np.ndarray]:
    """All the metrics of a CamResult, per row: deletion, insertion, drop, increase (0/1)."""
    inputs = _inputs(model, cams, None, None)  # once for both metrics
    rise = _deletion_insertion(model, *inputs, steps, "black", None, None, progress)
    drops = _average_drop_increase(model, *inputs, None, None)
    return {
        "deletion": rise["deletion"],
        "insertion": rise["insertion"],
        "drop": drops["drop"],
        "increase": (drops["explanation_confidence"] > drops["confidence"]).astype(np.float32),
    }
