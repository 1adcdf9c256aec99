"""Bounded worker threads: the explorer's model calls run here, never on the event loop.

Each served model gets one thread (its calls are serialized anyway: hooks are not re-entrant), so
a burst of requests queues up instead of spreading over dozens of threads, each keeping its own
malloc arena and OpenMP team for good. When a burst is over, freed memory goes back to the system.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import platform
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, TypeVar

from ..errors import ConvlensError

__all__ = ["Busy", "Worker", "release_memory"]

T = TypeVar("T")

#: Free memory is handed back once the queue is empty and this many calls ran since last time.
TRIM_EVERY = 16


class Busy(ConvlensError):
    """Too many requests wait for a worker (HTTP 429)."""


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_memory() -> bool:
    """Give free heap memory of every malloc arena back to the system (glibc only)."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class Worker:
    """``threads`` threads running calls in order; at most ``max_pending`` calls wait or run."""

    def __init__(self, name: str, *, threads: int = 1, max_pending: int = 256):
        self.name = name
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._pending = 0
        self._since_trim = 0

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on this worker's thread; ``Busy`` when ``max_pending`` calls are ahead."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise Busy(
                    f"the explorer is busy: {self._pending} requests wait for {self.name}; "
                    "try again in a moment"
                )
            self._pending += 1
        try:
            return await asyncio.wrap_future(self._executor.submit(fn, *args))
        finally:
            with self._lock:
                self._pending -= 1
                self._since_trim += 1
                trim = self._pending == 0 and self._since_trim >= TRIM_EVERY
                if trim:
                    self._since_trim = 0
            if trim:  # on the worker's own thread, so it never races a call
                with contextlib.suppress(RuntimeError):  # the worker was closed meanwhile
                    self._executor.submit(release_memory)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
