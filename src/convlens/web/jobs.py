"""Filter galleries computed in the background, with progress, and cached by what they show."""

from __future__ import annotations

import queue
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConvlensError
from ..models import LayerInfo
from ..render import to_png_bytes
from .slots import ModelSlot

__all__ = ["FilterJob", "FilterJobs"]

#: Channels per model call: the model's lock is released between chunks, so other requests
#: (predictions, grids) get their turn while a gallery is being computed.
CHUNK = 8
#: Filters per row of a gallery.
PER_ROW = 8


class JobCancelled(Exception):
    """Raised from a job's progress callback to stop it (the explorer is shutting down)."""


@dataclass
class FilterJob:
    """One filter gallery: its status, progress (optimization steps) and result."""

    id: str
    model: str
    layer: str
    recipe: str
    channels: list[int]
    total: int
    done: int = 0
    status: str = "queued"
    error: str | None = None
    facts: dict[str, Any] | None = None
    png: bytes | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def advance(self, steps: int = 1) -> None:
        if self.cancel.is_set():
            raise JobCancelled(f"filter job {self.id} was cancelled: the explorer is stopping")
        with self.lock:
            self.done = min(self.total, self.done + steps)

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {
                "id": self.id, "model": self.model, "layer": self.layer, "recipe": self.recipe,
                "channels": list(self.channels), "status": self.status, "done": self.done,
                "total": self.total, "error": self.error, "result": self.facts,
                "grid": f"/api/jobs/{self.id}/grid.png" if self.png is not None else None,
            }


class FilterJobs:
    """Runs filter jobs one at a time in a background thread; same request, same job."""

    def __init__(self, capacity: int = 64):
        self._jobs: dict[str, FilterJob] = {}
        self._by_request: dict[tuple[Any, ...], str] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[FilterJob, ModelSlot, int | None] | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._closed = threading.Event()
        self.capacity = capacity

    def get(self, job_id: str) -> FilterJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def submit(
        self, slot: ModelSlot, layer: LayerInfo, recipe: str, channels: list[int],
        steps: int | None = None,
    ) -> FilterJob:
        """The job for this gallery: a cached or running one, or a new one."""
        from ..filters.recipes import get_recipe

        key = (slot.name, layer.name, recipe, tuple(channels), steps)
        if self._closed.is_set():
            raise ConvlensError("the explorer is stopping; no new filter jobs")
        with self._lock:
            existing = self._jobs.get(self._by_request.get(key, ""))
            if existing is not None and existing.status != "error":
                return existing
            per_chunk = steps if steps is not None else get_recipe(recipe).steps
            job = FilterJob(
                id=secrets.token_urlsafe(12), model=slot.name, layer=layer.name, recipe=recipe,
                channels=channels, total=per_chunk * -(-len(channels) // CHUNK),
            )
            self._jobs[job.id] = job
            self._by_request[key] = job.id
            self._forget_old()
        self._queue.put((job, slot, steps))
        self._start_worker()
        return job

    def _start_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                # A daemon thread: stopping the server never waits for a gallery to finish.
                self._worker = threading.Thread(
                    target=self._work, daemon=True, name="convlens-filters"
                )
                self._worker.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self._run(*item)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel the running and queued jobs and wait (``timeout`` s) for the worker to stop."""
        self._closed.set()
        with self._lock:
            for job in self._jobs.values():
                job.cancel.set()
            worker = self._worker
        self._queue.put(None)
        if worker is not None:
            worker.join(timeout)

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.status in ("done", "error")]
        for job in finished[: max(0, len(self._jobs) - self.capacity)]:
            del self._jobs[job.id]
            self._by_request = {k: v for k, v in self._by_request.items() if v != job.id}

    def _run(self, job: FilterJob, slot: ModelSlot, steps: int | None) -> None:
        from ..filters import FilterResult, filter_grid

        job.status = "running"
        parts: list[FilterResult] = []
        try:
            job.advance(0)  # a job cancelled while queued stops here
            for start in range(0, len(job.channels), CHUNK):
                chunk = job.channels[start : start + CHUNK]
                options: dict[str, Any] = {"channels": chunk, "recipe": job.recipe,
                                           "progress": job.advance}
                if steps is not None:
                    options["steps"] = steps
                parts.append(slot.call(lambda o=options: slot.model.filters(job.layer, **o)))
            images = np.concatenate([p.images for p in parts])
            quality = np.concatenate([p.quality for p in parts])
            activation = np.concatenate([p.activation for p in parts])
            png = to_png_bytes(filter_grid(images, per_row=PER_ROW))
            facts = {
                "layer": job.layer, "recipe": job.recipe, "channels": job.channels,
                "size": list(images.shape[1:3]), "per_row": PER_ROW,
                "activation": [_number(v) for v in activation],
                "quality": [_number(v) for v in quality],
            }
            with job.lock:
                job.png, job.facts, job.done, job.status = png, facts, job.total, "done"
        except Exception as err:  # reported to the page, which shows it
            message = str(err) if isinstance(err, ConvlensError) else f"{type(err).__name__}: {err}"
            with job.lock:
                job.status, job.error = "error", message


def _number(value: Any) -> float | None:
    value = float(value)
    return round(value, 4) if np.isfinite(value) else None
