"""Per channel of each layer output: the spatial max, its first position and the spatial mean.

A scan needs these three numbers for every (image, channel) map of every layer: 862 MB of
EfficientNet-Lite0 activations per batch of 32. torch reads them twice (max pooling with indices,
then a mean); with numba (the ``scan`` extra) one compiled loop reads each map once and writes
all three, the layers' images split over torch's thread count (the loops release the GIL): about
half the time on two cores (``benchmarks/bench_scan.py``). Both give the same max and position
(the first maximum; a NaN wins, as in max pooling); the mean is summed in float64 by numba and in
float32 by torch (within 1e-6 relative).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["spatial_stats", "warm"]

Stats = tuple[np.ndarray, np.ndarray, np.ndarray]


def spatial_stats(maps: list[torch.Tensor]) -> Stats:
    """``maps``: (N, C_i, H_i, W_i) tensors (any memory layout). Returns the (N, sum C_i) spatial
    max (float64), position ``h * W + w`` of its first occurrence (int64) and spatial mean
    (float64), the layers' channels side by side."""
    if all(_fused(t) for t in maps) and _kernels() is not None:
        return _numba_stats(maps)
    return _torch_stats(maps)


def warm() -> None:
    """Import numba and load (or compile) both loops now, not in the first batch: a Ray actor
    does it while its first rows are being read (about 1 s in a fresh process)."""
    plain = torch.zeros(1, 2, 2, 2)
    spatial_stats([plain, plain.contiguous(memory_format=torch.channels_last)])


def _torch_stats(maps: list[torch.Tensor]) -> Stats:
    smaxes, wheres, smeans = [], [], []
    for tensor in maps:
        n, c, h, w = tensor.shape
        smax, where = F.adaptive_max_pool2d(tensor, 1, return_indices=True)
        # the mean from an (N, H*W, C) or (N, C, H*W) view, in the map's memory order
        if _channels_last(tensor):
            smean = tensor.permute(0, 2, 3, 1).reshape(n, h * w, c).float().mean(dim=1)
        else:
            smean = tensor.reshape(n, c, h * w).float().mean(dim=2)
        smaxes.append(smax.reshape(n, c))
        wheres.append(where.reshape(n, c))
        smeans.append(smean)
    return (torch.cat(smaxes, dim=1).double().cpu().numpy(),
            torch.cat(wheres, dim=1).cpu().numpy(),
            torch.cat(smeans, dim=1).double().cpu().numpy())


def _channels_last(tensor: torch.Tensor) -> bool:
    return not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last)


def _fused(tensor: torch.Tensor) -> bool:
    return (tensor.device.type == "cpu" and tensor.dtype == torch.float32
            and (tensor.is_contiguous() or _channels_last(tensor)))


_pools: dict[int, ThreadPoolExecutor] = {}


def _threads() -> tuple[ThreadPoolExecutor, int]:
    """A pool of torch's thread count (made once per count)."""
    count = max(1, torch.get_num_threads())
    if count not in _pools:
        _pools[count] = ThreadPoolExecutor(count, thread_name_prefix="convlens-reduce")
    return _pools[count], count


def _numba_stats(maps: list[torch.Tensor]) -> Stats:
    by_rows, by_channels = _kernels()
    n = maps[0].shape[0]
    total = sum(t.shape[1] for t in maps)
    smax = np.empty((n, total))
    where = np.empty((n, total), np.int64)
    smean = np.empty((n, total))
    pool, count = _threads()
    bounds = np.linspace(0, n, min(count, n) + 1).astype(int)
    jobs: list[Future] = []
    start = 0
    for tensor in maps:
        _, c, h, w = tensor.shape
        if _channels_last(tensor):  # (N, H*W, C): a row of C values per position
            kernel, array = by_rows, tensor.permute(0, 2, 3, 1).reshape(n, h * w, c).numpy()
        else:  # (N, C, H*W): each map contiguous
            kernel, array = by_channels, tensor.reshape(n, c, h * w).numpy()
        out = (smax[:, start:start + c], where[:, start:start + c], smean[:, start:start + c])
        jobs += [pool.submit(kernel, array, lo, hi, *out) for lo, hi in pairwise(bounds)
                 if hi > lo]
        start += c
    for job in jobs:
        job.result()
    return smax, where, smean


#: the compiled loops; None without numba; False until first asked (importing numba takes 0.2 s,
#: which ``import convlens`` does not pay)
_KERNELS: tuple | bool | None = False


def _kernels() -> tuple | None:
    global _KERNELS
    if _KERNELS is False:
        try:
            import numba
        except ImportError:  # the torch reductions
            _KERNELS = None
        else:
            _KERNELS = _compile(numba)
    return _KERNELS  # type: ignore[return-value]


def _compile(numba) -> tuple:
    """The two loops (positions outer for channels-last maps, channels outer otherwise); each
    fills rows ``lo:hi`` of its outputs: max, first position (a NaN wins), float64 mean."""
    jit = numba.njit(nogil=True, cache=True, boundscheck=False)

    @jit
    def by_rows(x, lo, hi, smax, where, smean):  # pragma: no cover - compiled
        _, positions, channels = x.shape
        best = np.empty(channels, np.float32)
        at = np.zeros(channels, np.int64)
        total = np.zeros(channels, np.float64)
        for i in range(lo, hi):
            for c in range(channels):
                best[c] = x[i, 0, c]
                at[c] = 0
                total[c] = 0.0
            for p in range(positions):
                for c in range(channels):
                    v = x[i, p, c]
                    total[c] += v
                    up = (v > best[c]) | (v != v)
                    best[c] = v if up else best[c]
                    at[c] = p if up else at[c]
            for c in range(channels):
                smax[i, c] = best[c]
                where[i, c] = at[c]
                smean[i, c] = total[c] / positions

    @jit
    def by_channels(x, lo, hi, smax, where, smean):  # pragma: no cover - compiled
        _, channels, positions = x.shape
        for i in range(lo, hi):
            for c in range(channels):
                best = x[i, c, 0]
                at = 0
                total = 0.0
                for p in range(positions):
                    v = x[i, c, p]
                    total += v
                    if v > best or v != v:
                        best = v
                        at = p
                smax[i, c] = best
                where[i, c] = at
                smean[i, c] = total / positions

    return by_rows, by_channels

