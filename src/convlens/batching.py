"""The one memory budget and batch sizing of convlens.

Every batched computation (Score-CAM's and Ablation-CAM's perturbed images, the metrics, filter
visualization's chunks) is bounded by :func:`budget_bytes`, with the memory one image needs
estimated from the traced layer sizes by :func:`bytes_per_image`. Within that bound,
:class:`BatchSizer` starts small and doubles while the time per item keeps falling, then keeps the
fastest size. On a CPU the fastest batch is often small (cache effects); on a GPU it is large.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from .errors import ModelError

if TYPE_CHECKING:
    from .models import LayerInfo, Model

__all__ = ["BatchSizer", "budget_bytes", "bytes_per_image", "max_batch"]

#: A no-grad forward pass holds a few layer outputs at once: this many of the largest one.
_ACTIVATION_FACTOR = 4
_MAX_BATCH = 256


def budget_bytes(device: torch.device, memory_budget: int | None = None) -> int:
    """Bytes one batch may use: ``memory_budget`` if given, else half the free GPU memory, or
    1/8 of the RAM (at most 2 GiB) on a CPU."""
    if memory_budget is not None:
        if int(memory_budget) <= 0:
            raise ModelError(
                f"memory_budget must be a positive number of bytes, not {memory_budget}"
            )
        return int(memory_budget)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 << 30
    return int(min(2 << 30, ram // 8))


def bytes_per_image(
    model: Model, size: tuple[int, int], *, backward: bool = False,
    upto: LayerInfo | None = None,
) -> int:
    """Activation memory of one ``size`` image's forward pass (and backward, if ``backward``).

    No-grad: a few of the largest layer outputs are alive at once. With a backward pass every
    output up to ``upto`` (default: the last layer) is kept, and gets a gradient.
    """
    scale = (size[0] * size[1]) / (model.input_size[0] * model.input_size[1])
    item = torch.empty((), dtype=model.dtype).element_size()
    if not backward:
        infos = model.layers(include_blocks=True)
        largest = max((math.prod(i.output_shape[1:]) for i in infos if i.output_shape), default=1)
        return int(max(1.0, largest * scale * item * _ACTIVATION_FACTOR))
    leaves = model.layers()
    last = upto.order if upto is not None else max(i.order for i in leaves)
    elements = sum(
        math.prod(i.output_shape[1:]) for i in leaves
        if i.order <= last and i.output_shape is not None
    )
    # outputs kept for the backward pass + their gradients, and the image itself
    return int(2 * elements * scale * item + 16 * 3 * size[0] * size[1])


def max_batch(
    model: Model, size: tuple[int, int], memory_budget: int | None = None, *,
    backward: bool = False, upto: LayerInfo | None = None,
) -> int:
    """The largest batch of ``size`` images that fits ``memory_budget`` bytes (at most 256)."""
    budget = budget_bytes(model.device, memory_budget)
    per_image = bytes_per_image(model, size, backward=backward, upto=upto)
    return int(max(1, min(_MAX_BATCH, budget // per_image)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BatchSizer:
    """Chooses batch sizes for ``total`` items: fixed, or tuned by timing the first batches.

    Tuning runs each size twice (the first run of a new shape pays one-off setup costs) and
    times the second; it doubles the size up to ``limit`` while tuning has spent at most a
    quarter of the items, stopping early at a size clearly slower per item than the best so far
    (a single timing is noisy, so a few percent worse does not stop it); then it keeps the
    fastest size. Every item is computed exactly once.

    >>> for start, stop in BatchSizer(total, limit, device):
    ...     run(items[start:stop])          # the work between two steps is what gets timed
    """

    #: how much slower than the best a size may be before the doubling stops.
    TOLERANCE = 1.25
    #: the share of the items that tuning may spend.
    EXPLORE = 0.25

    def __init__(
        self, total: int, limit: int, device: torch.device, fixed: int | None = None
    ):
        if fixed is not None and fixed < 1:
            raise ModelError(f"batch_size must be at least 1, not {fixed}")
        self.total = total
        self.limit = max(1, min(limit, total)) if fixed is None else fixed
        self.device = device
        self.best: int | None = fixed
        self.per_item: dict[int, float] = {}

    def _sizes(self) -> Iterator[int]:
        size, spent = 1, 0
        budget = max(2, self.EXPLORE * self.total)
        while self.best is None:
            yield size  # warm-up run of this shape
            yield size  # timed run
            spent += 2 * size
            best = min(self.per_item.values(), default=float("inf"))
            if size not in self.per_item:  # the last batch was cut short: stop tuning
                self.best = size
            elif (self.per_item[size] > best * self.TOLERANCE or size * 2 > self.limit
                  or spent + 4 * size > budget):
                self.best = min(self.per_item, key=self.per_item.__getitem__)
            else:
                size *= 2
        while True:
            yield self.best

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, previous = 0, None
        sizes = self._sizes()
        while start < self.total:
            size = next(sizes)
            stop = min(self.total, start + size)
            timed = self.best is None and previous == size
            _sync(self.device)
            began = time.perf_counter()
            yield start, stop
            if timed and stop - start == size:
                _sync(self.device)
                self.per_item[size] = (time.perf_counter() - began) / size
            previous = None if timed else size
            start = stop
