"""The explorer's job queue: heavy work (filter galleries, Score-CAM, Ablation-CAM) runs here.

One background thread runs the jobs in order, so heavy work never holds up a request; the queue
is bounded (``capacity`` jobs queued or running), a job can be cancelled, and the same request
gets the same job (a finished one is its cached result).
"""

from __future__ import annotations

import queue
import secrets
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConvlensError
from .workers import release_memory

__all__ = ["Job", "JobCancelled", "JobQueue", "QueueFull"]

#: What a job's work returns: its facts, and a picture (PNG) or None.
Output = tuple[dict[str, Any], bytes | None]
ACTIVE = ("queued", "running")


class JobCancelled(Exception):
    """Raised from a job's progress callback to stop it."""


class QueueFull(ConvlensError):
    """The job queue holds ``capacity`` unfinished jobs (HTTP 429)."""


@dataclass
class Job:
    """One job: what it computes (``params``), its status, progress and result."""

    id: str
    kind: str
    model: str
    params: dict[str, Any]
    total: int | None = None
    done: int = 0
    status: str = "queued"
    error: str | None = None
    result: dict[str, Any] | None = None
    png: bytes | None = field(default=None, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    #: set once the worker is through with the job (run, failed, stopped or skipped)
    finished: threading.Event = field(default_factory=threading.Event, repr=False)

    def advance(self, steps: int = 1) -> None:
        """Progress callback of the work: counts steps, stops the work once cancelled."""
        if self.cancel.is_set():
            raise JobCancelled(f"job {self.id} was cancelled")
        with self.lock:
            self.done += steps
            if self.total is not None:
                self.done = min(self.total, self.done)

    def describe(self) -> dict[str, Any]:
        with self.lock:
            return {
                "id": self.id, "kind": self.kind, "model": self.model, **self.params,
                "status": self.status, "done": self.done, "total": self.total,
                "error": self.error, "result": self.result,
                "grid": f"/api/jobs/{self.id}/grid.png" if self.png is not None else None,
            }

    def _finish(self, status: str, error: str | None = None, output: Output | None = None) -> None:
        with self.lock:
            if self.status == "cancelled":
                return  # cancelled while it ran: its result is dropped
            self.status, self.error = status, error
            if output is not None:
                self.result, self.png = output
                if self.total is not None:
                    self.done = self.total


class JobQueue:
    """Runs jobs one at a time in a background thread; at most ``capacity`` unfinished."""

    def __init__(self, capacity: int = 8, keep: int = 64):
        self.capacity = capacity
        self.keep = keep
        self._jobs: dict[str, Job] = {}
        self._by_key: dict[Hashable, str] = {}
        self._work: dict[str, Callable[[Job], Output]] = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._closed = threading.Event()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def snapshot(self) -> list[Job]:
        """The jobs it knows (unfinished, and recent finished ones), oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def submit(
        self, key: Hashable, kind: str, model: str, params: dict[str, Any],
        work: Callable[[Job], Output], total: int | None = None,
    ) -> Job:
        """The job for ``key``: a cached or unfinished one, or a new one running ``work(job)``."""
        if self._closed.is_set():
            raise ConvlensError("the explorer is stopping; no new jobs")
        with self._lock:
            existing = self._jobs.get(self._by_key.get(key, ""))
            if existing is not None and existing.status in (*ACTIVE, "done"):
                return existing
            active = sum(job.status in ACTIVE for job in self._jobs.values())
            if active >= self.capacity:
                raise QueueFull(
                    f"the job queue is full ({active} jobs queued or running); wait for one to "
                    "finish or cancel one with DELETE /api/jobs/ID"
                )
            job = Job(id=secrets.token_urlsafe(12), kind=kind, model=model, params=params,
                      total=total)
            self._jobs[job.id] = job
            self._by_key[key] = job.id
            self._work[job.id] = work
            self._forget_old()
        self._queue.put(job)
        self._start_worker()
        return job

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job (a running one stops at its next step)."""
        job = self.get(job_id)
        if job is not None:
            job.cancel.set()
            with job.lock:
                if job.status in ACTIVE:
                    job.status, job.error = "cancelled", "cancelled by a request"
        return job

    def close(self, timeout: float = 10.0) -> None:
        """Cancel every unfinished job and wait (``timeout`` s) for the worker to stop."""
        self._closed.set()
        with self._lock:
            jobs, worker = list(self._jobs.values()), self._worker
        for job in jobs:
            job.cancel.set()
            with job.lock:
                if job.status in ACTIVE:
                    job.status, job.error = "cancelled", "the explorer is stopping"
        self._queue.put(None)
        if worker is not None:
            worker.join(timeout)

    @property
    def alive(self) -> bool:
        with self._lock:
            return self._worker is not None and self._worker.is_alive()

    def _start_worker(self) -> None:
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                # A daemon thread: stopping the server never waits for a job to finish.
                self._worker = threading.Thread(target=self._loop, daemon=True,
                                                name="convlens-jobs")
                self._worker.start()

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            with self._lock:
                work = self._work.pop(job.id)
            self._run(job, work)
            release_memory()  # a heavy job's peak goes back to the system

    def _forget_old(self) -> None:
        finished = [j for j in self._jobs.values() if j.status not in ACTIVE]
        for job in finished[: max(0, len(self._jobs) - self.keep)]:
            del self._jobs[job.id]
            self._by_key = {k: v for k, v in self._by_key.items() if v != job.id}

    @staticmethod
    def _run(job: Job, work: Callable[[Job], Output]) -> None:
        try:
            with job.lock:
                if job.status != "queued":
                    return  # cancelled while queued
                job.status = "running"
            job.advance(0)
            output = work(job)
        except JobCancelled:
            job._finish("cancelled", "cancelled")
        except Exception as err:  # reported to the page, which shows it
            message = str(err) if isinstance(err, ConvlensError) else f"{type(err).__name__}: {err}"
            job._finish("error", message)
        else:
            job._finish("done", output=output)
        finally:
            job.finished.set()
