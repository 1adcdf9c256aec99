"""``compute_cam``: the entry point ``Model.cam`` calls."""

from __future__ import annotations

import inspect
import warnings
from functools import cache
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..errors import ModelError
from ..gradients import repeat_rows
from ..models import register_view
from ..targets import row_probabilities
from .core import CamMethod, explain, method_class, target_layers
from .maps import normalize_maps
from .result import CamResult

if TYPE_CHECKING:
    from ..models import Images, Model

__all__ = ["compute_cam", "make_method"]


@cache
def _options_of(cls: type[CamMethod]) -> list[str]:
    return [p for p in inspect.signature(cls).parameters]


def make_method(method: str | CamMethod | type[CamMethod], options: dict[str, Any]) -> CamMethod:
    """A method object from a name (``"gradcam"``, ``"Grad-CAM++"``...), a class or an instance."""
    if isinstance(method, CamMethod):
        if options:
            raise ModelError(
                f"pass {', '.join(options)} to the {method.title} object, not to cam()"
            )
        return method
    cls = method if isinstance(method, type) and issubclass(method, CamMethod) else None
    if cls is None:
        if not isinstance(method, str):
            raise ModelError(f"method must be a name like 'gradcam', not a {type(method).__name__}")
        cls = method_class(method)
    accepted = _options_of(cls)
    unknown = [name for name in options if name not in accepted]
    if unknown:
        takes = f"its options are {', '.join(accepted)}" if accepted else "it takes no options"
        raise ModelError(f"{cls.title} has no option {', '.join(map(repr, unknown))}; {takes}")
    return cls(**options)


def _private_pixels(pixels: torch.Tensor, images: Any) -> np.ndarray:
    """``pixels`` as a float32 NumPy array that is not a view of the caller's ``images``."""
    array = pixels.detach().to("cpu", torch.float32).numpy()
    if isinstance(images, np.ndarray):
        shared = np.may_share_memory(array, images)
    elif isinstance(images, torch.Tensor) and images.device.type == "cpu":
        shared = images.untyped_storage().data_ptr() == pixels.untyped_storage().data_ptr()
    else:
        shared = False  # paths, lists (stacked into a new array), tensors on another device
    return array.copy() if shared else array


@register_view("cam")
def compute_cam(
    model: Model,
    images: Images,
    method: str | CamMethod | type[CamMethod] = "gradcam",
    target: Any = None,
    layer: Any = None,
    *,
    threshold: float = 0.15,
    progress: bool = False,
    **options: Any,
) -> CamResult:
    """Class activation maps of ``images`` (one batch, one forward pass for gradient methods).

    Args:
        model: a :class:`~convlens.models.base.Model`.
        images: anything ``model.to_pixels`` takes (paths, sample names, arrays, tensors, lists).
        method: one of ``METHODS`` (gradcam, gradcam++, xgradcam, layercam, hirescam, scorecam,
            ablationcam, eigencam), or a method object.
        target: ``None`` (each image's top-1 class), a class index, a class name, a list with
            one per image, ``"top-k"`` (k rows per image), a :class:`~.targets.Target`, or a
            function of one image's output row (logits) returning a scalar tensor. A sigmoid
            model's classes are 0 (its logit negated) and 1 (its logit).
        layer: ``None`` (the last layer with a spatial output), a layer name, or a list / glob of
            layers whose normalized maps are averaged.
        threshold: fraction of each map's max that bounds the box (the Grad-CAM paper's 15 %).
        progress: show a progress bar (Score-CAM, Ablation-CAM).
        **options: the method's own options (Score-CAM: ``top_k``, ``batch_size``...).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ModelError(f"threshold is a fraction of the map's maximum in [0, 1], not {threshold}")
    algorithm = make_method(method, options)
    infos = target_layers(model, layer, algorithm.name)
    pixels = model.to_pixels(images)
    ctx, raws = explain(algorithm, model, pixels, infos, target, progress)
    heat, empty = normalize_maps(raws, tuple(pixels.shape[1:3]))
    rows = ctx.plan.rows
    shown = repeat_rows(pixels, ctx.plan.k)
    probability = row_probabilities(ctx.plan, ctx.logits)
    raw_maps = {info.name: raw.float().cpu().numpy() for info, raw in zip(infos, raws)}
    result = CamResult(
        method=algorithm.name,
        title=algorithm.title,
        layers=[info.name for info in infos],
        heatmap=heat.cpu().numpy(),
        raw=raw_maps[infos[-1].name],
        target=[int(t.index) for _, t in rows],
        target_names=[t.label(model) for _, t in rows],
        score=ctx.scores.cpu().numpy(),
        probability=probability.cpu().numpy(),
        images=_private_pixels(shown, images),
        image_index=[i for i, _ in rows],
        empty=empty.cpu().numpy(),
        raw_maps=raw_maps,
        threshold=threshold,
    )
    if result.empty.any():
        which = [f"{result.target_names[r]} (row {r})" for r in result.empty.nonzero()[0]]
        warnings.warn(
            f"{algorithm.title} map is all zero for {', '.join(which)}: nothing at "
            f"{', '.join(result.layers)} raises the score; the heatmap stays 0 (see .empty)",
            RuntimeWarning, stacklevel=3,
        )
    return result
