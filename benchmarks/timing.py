"""Timing helpers: interleaved repeats, medians, and a printed table."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import torch

from convlens import runtime
from convlens.runtime import tune_allocator


def setting(tune: bool = True) -> str:
    """Describe the machine in one line; with ``tune``, first apply the ``convlens`` command's
    process settings (both sides of every ratio run in this process, with the same allocator).
    """
    if tune:
        tune_allocator()
    allocator = "glibc malloc tuned" if runtime._tuned else "default malloc"
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    return (f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, "
            f"{allocator} (convlens.runtime), load average {os.getloadavg()[0]:.1f}")


def timed(call: Callable[[], object], device: torch.device | None = None) -> float:
    """Wall time of one call, waiting for a CUDA device's queued work before and after."""
    sync = torch.cuda.synchronize if device is not None and device.type == "cuda" else None
    if sync:
        sync(device)
    start = time.perf_counter()
    call()
    if sync:
        sync(device)
    return time.perf_counter() - start


def interleaved_times(
    fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2
) -> dict[str, list[float]]:
    """Wall times of each function over ``repeats`` rounds, run interleaved round by round.

    The order turns by one each round, so that no function always runs after the same one
    (a call that churns memory or caches slows the next).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for round_ in range(repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def median_times(fns: dict[str, Callable[[], object]], repeats: int = 7, warmup: int = 2):
    """Median wall time of each function, the functions run interleaved round by round."""
    samples = interleaved_times(fns, repeats, warmup)
    return {name: statistics.median(values) for name, values in samples.items()}


def print_table(title: str, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)))
