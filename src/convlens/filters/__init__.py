"""Filter visualization: gradient ascent in input space, all channels of a layer at once.

>>> fv = model.filters("_blocks.8._bn0", channels=range(16), recipe="chollet", seed=0)
>>> fv.images, fv.activation, fv.quality        # (K, h, w, 3) uint8, (K,), (K,)
>>> grid = filter_grid(fv)                       # 8 per row, 5 px black margins

Two recipes (``"chollet"``: Deep Learning with Python, ch. 9; ``"lucid"``: Lucid/Lucent), one
engine (:mod:`convlens.filters.ascent`). Objectives are in :mod:`convlens.filters.objectives`.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import ModelError
from ..images import SAMPLES, sample_image
from ..models import register_view
from ..progress import Advance
from .ascent import ascend
from .grid import filter_grid
from .objectives import (
    Objective,
    channel,
    class_logit,
    diversity,
    layer_objective,
    neuron,
    without_border,
)
from .recipes import RECIPES, Recipe, get_recipe

if TYPE_CHECKING:
    from ..models import Model

__all__ = [
    "RECIPES", "FilterResult", "Objective", "Recipe", "channel", "class_logit", "diversity",
    "filter_grid", "image_seed", "layer_objective", "neuron", "photo_activation",
    "visualize_filters",
]


@dataclass
class FilterResult:
    """Filter visualizations of one layer.

    ``images`` (K, h, w, 3) uint8, one per channel; ``activation`` (K,) the objective reached;
    ``quality`` (K,) the channel's mean activation reached divided by ``reference``, its strongest
    mean activation over the bundled sample photos (> 1: the pattern excites the filter more than
    any of those photos; NaN where the reference is not positive, and a ratio means nothing).
    """

    images: np.ndarray
    activation: np.ndarray
    channels: list[int]
    layer: str
    recipe: str
    quality: np.ndarray
    reference: np.ndarray | None = None

    def _repr_png_(self) -> bytes:
        from ..render import to_png_bytes

        return to_png_bytes(filter_grid(self))

    def __repr__(self) -> str:
        finite = self.quality[np.isfinite(self.quality)]
        median = float(np.median(finite)) if finite.size else float("nan")
        return (
            f"<FilterResult {self.layer!r}, {self.recipe}: {len(self.channels)} images "
            f"{self.images.shape[1]}x{self.images.shape[2]}, median quality {median:.2f}>"
        )


def image_seed(seed: int, channel_index: int, repeat: int = 0) -> int:
    """The generator seed of one image: from the run's seed, its channel and repeat number.

    Images depend on these only, never on which other images share their batch.
    """
    state = np.random.SeedSequence([seed, channel_index, repeat]).generate_state(2)
    return int(state[0]) << 32 | int(state[1])


_photo_cache: weakref.WeakKeyDictionary[Model, dict[tuple[str, int], torch.Tensor]] = (
    weakref.WeakKeyDictionary()
)


def photo_activation(model: Model, layer: str, border: int = 0) -> torch.Tensor:
    """(C,) each channel's strongest mean activation over the bundled sample photos (cached)."""
    info = model.layer(layer)
    cache = _photo_cache.setdefault(model, {})
    key = (info.name, border)
    if key not in cache:
        photos = np.stack([sample_image(name, size=model.input_size) for name in SAMPLES])
        with torch.no_grad(), model.capture([info], stop_early=True) as cap:
            cap.run(model.inputs(photos))
        maps = model.nchw(cap.outputs[info.name])
        means = without_border(maps, border, info.name).mean(dim=(-2, -1))  # as channel() does
        cache[key] = means.amax(dim=0).float()
    return cache[key]


def _channel_list(channels: Iterable[int] | int | None, count: int | None) -> list[int]:
    if channels is None:
        return list(range(min(16, count or 16)))
    if isinstance(channels, (int, np.integer)):
        return [int(channels)]
    picked = list(channels)
    if not picked:
        raise ModelError("no channels requested; pass e.g. channels=range(16)")
    if not all(isinstance(c, (int, np.integer)) for c in picked):
        raise ModelError(f"channels must be whole numbers, got {picked[:5]}")
    return [int(c) for c in picked]


@register_view("filters")
def visualize_filters(
    model: Model,
    layer: str,
    channels: Iterable[int] | int | None = None,
    recipe: str | Recipe = "chollet",
    seed: int = 0,
    steps: int | None = None,
    size: int | None = None,
    objective: Objective | None = None,
    batch_size: int | None = None,
    progress: bool | Advance | None = None,
    memory_budget: int | None = None,
) -> FilterResult:
    """The image each channel of ``layer`` responds to most, by gradient ascent.

    Args:
        channels: channels to show (default: the first 16); image ``i`` is for ``channels[i]``.
        recipe: ``"chollet"`` (the book: 30 steps, 200 px, 150 px tiles) or ``"lucid"``
            (Fourier image, decorrelated colours, transformation robustness; 512 steps, 128 px).
        seed: same seed, same images (on the same device), however the work is split in chunks.
        steps, size: override the recipe's.
        objective: what to maximize instead of ``channel(layer, channels)``; per-image indices
            follow ``channels``. The quality figure still refers to ``channels`` of ``layer``.
        batch_size: images per chunk (default: as many as fit ``memory_budget`` bytes, by
            default half the free GPU memory or 1/8 of RAM up to 2 GiB).
        progress: True for a progress bar (steps x chunks), or an ``advance(n)`` callback.
    """
    plan = get_recipe(recipe)
    info = model.layer(layer)
    picked = _channel_list(channels, info.channels)
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ModelError(f"seed must be a whole number >= 0, not {seed!r}")
    steps = plan.steps if steps is None else int(steps)
    if steps < 1:
        raise ModelError(f"steps must be at least 1, not {steps}")
    if size is not None and size < 8:
        raise ModelError(f"size must be at least 8 pixels, not {size}")
    default = channel(info.name, picked, border=plan.border)
    target = objective if objective is not None else default
    if objective is not None and not isinstance(objective, Objective):
        raise ModelError(
            "objective must be built from convlens.filters.objectives, not a "
            f"{type(objective).__name__}"
        )
    measure = [default] if objective is not None and info.spatial else []  # ascend checks both
    repeats: dict[int, int] = {}
    seeds = []
    for c in picked:
        seeds.append(image_seed(int(seed), c, repeats.get(c, 0)))
        repeats[c] = repeats.get(c, 0) + 1
    done = ascend(
        model, target, plan, seeds, steps=steps, size=plan.image_size(model, size),
        batch_size=batch_size, memory_budget=memory_budget, measure=measure,
        progress=progress, title=f"{plan.name} {info.name}",
    )
    reached = (done.extra[0] if measure else done.scores).float().cpu()
    if info.spatial:
        best = photo_activation(model, info.name, plan.border).cpu()[picked]
        quality = torch.where(best > 0, reached / best.clamp(min=1e-12), torch.nan).numpy()
        reference = best.numpy()
    else:
        quality = np.full(len(picked), np.nan, np.float32)
        reference = None
    return FilterResult(
        images=done.pictures.cpu().numpy(),
        activation=done.scores.cpu().numpy(),
        channels=picked,
        layer=info.name,
        recipe=plan.name,
        quality=quality.astype(np.float32),
        reference=reference,
    )
