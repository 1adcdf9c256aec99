"""Batch sizes for the methods and metrics that run many perturbed forward passes.

The largest batch is bounded by a memory budget (estimated from the traced layer sizes); within
it, :class:`BatchSizer` starts small and doubles while the time per item keeps falling, then keeps
the fastest size. On a CPU the fastest batch is often small (cache effects); on a GPU it is large.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch

from ..errors import ModelError

if TYPE_CHECKING:
    from ..models.base import Model

__all__ = ["BatchSizer", "default_memory_budget", "max_batch"]

#: Memory used by one sample, as a multiple of its largest layer output (input, output, scratch).
_ACTIVATION_FACTOR = 4
_MAX_BATCH = 256


def default_memory_budget(device: torch.device) -> int:
    """Bytes the perturbed batches may use: a quarter of the free GPU memory, or 1 GiB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free // 4)
    return 1 << 30


def max_batch(model: Model, size: tuple[int, int], memory_budget: int | None = None) -> int:
    """The largest batch of ``size`` images whose forward pass fits ``memory_budget`` bytes."""
    budget = default_memory_budget(model.device) if memory_budget is None else int(memory_budget)
    if budget <= 0:
        raise ModelError(f"memory_budget must be a positive number of bytes, not {memory_budget}")
    scale = (size[0] * size[1]) / (model.input_size[0] * model.input_size[1])
    largest = max(
        (math.prod(info.output_shape[1:]) for info in model.layers(include_blocks=True)
         if info.output_shape), default=1,
    )
    item = torch.empty((), dtype=model.dtype).element_size()
    per_sample = max(1.0, largest * scale * item * _ACTIVATION_FACTOR)
    return int(max(1, min(_MAX_BATCH, budget // per_sample)))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class BatchSizer:
    """Chooses batch sizes for ``total`` items: fixed, or tuned by timing the first batches.

    >>> sizer = BatchSizer(total, limit, device)
    >>> for start, stop in sizer:     # the work between two steps is what gets timed
    ...     run(items[start:stop])
    """

    def __init__(
        self, total: int, limit: int, device: torch.device, fixed: int | None = None
    ):
        if fixed is not None and fixed < 1:
            raise ModelError(f"batch_size must be at least 1, not {fixed}")
        self.total = total
        self.limit = max(1, min(limit, total)) if fixed is None else fixed
        self.device = device
        self.fixed = fixed
        self.best: int | None = fixed
        self._per_item: dict[int, float] = {}

    def _next_size(self, previous: int | None) -> int:
        if self.best is not None:
            return self.best
        if previous is None:
            return 1
        times = self._per_item
        grown = previous * 2
        worse = len(times) > 1 and times[previous] > min(times.values())
        if worse or grown > self.limit:
            self.best = min(times, key=times.__getitem__)
            return self.best
        return grown

    def __iter__(self) -> Iterator[tuple[int, int]]:
        start, size = 0, None
        while start < self.total:
            size = self._next_size(size)
            stop = min(self.total, start + size)
            _sync(self.device)
            began = time.perf_counter()
            yield start, stop
            _sync(self.device)
            if self.best is None and stop - start == size:
                self._per_item[size] = (time.perf_counter() - began) / size
            start = stop
