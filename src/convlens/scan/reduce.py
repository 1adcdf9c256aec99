"""Per channel of each layer output: the spatial max, its first position and the spatial mean.

A scan needs these three numbers for every (image, channel) map of every layer: 862 MB of
EfficientNet-Lite0 activations per batch of 32. torch reads them twice (max pooling with indices,
then a mean); with numba (the ``scan`` extra) one compiled loop reads each map once and writes
all three, the layers' images split over torch's thread count (the loops release the GIL): about
half the time on two cores (``benchmarks/bench_scan.py``). Both give the same max and position
(the first maximum; a NaN wins, as in max pooling); the mean is summed in float64 by numba and in
float32 by torch (within 1e-6 relative).

The bounded top-k per channel (value descending, then image id ascending) has two loops too:
:func:`batch_top` picks a batch's entries that beat the running k-th best and
:func:`merge_tops` merges two sorted top-k tables, one pass over each column (NumPy sorts
every column instead: 30-45 ms a batch of EfficientNet-Lite0's 10k channels).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from itertools import pairwise

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Top", "batch_top", "merge_tops", "spatial_stats", "warm"]

Stats = tuple[np.ndarray, np.ndarray, np.ndarray]
#: a top-k table: (k, C) value (float64, descending), image id (int64), argmax row and column
#: (int32); empty slots hold (-inf, NO_IMAGE, 0, 0)
Top = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

#: An empty top-k slot's image id: after every real id in the (value desc, id asc) order.
NO_IMAGE = np.iinfo(np.int64).max


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
    smax, where, _ = spatial_stats([plain, plain.contiguous(memory_format=torch.channels_last)])
    best = empty_top(2, 4)
    top = batch_top(smax, np.zeros(1, np.int64), where, np.full(4, 2), best[0], best[1])
    merge_tops(top, best)


def empty_top(k: int, channels: int) -> Top:
    """A top-k table with no image."""
    return (np.full((k, channels), -np.inf), np.full((k, channels), NO_IMAGE, np.int64),
            np.zeros((k, channels), np.int32), np.zeros((k, channels), np.int32))


def batch_top(value: np.ndarray, ids: np.ndarray, where: np.ndarray, width: np.ndarray,
              best_value: np.ndarray, best_id: np.ndarray) -> Top:
    """A batch's top-k table: per column of ``value`` (N, C), the (at most k) images that beat
    the k-th entry of the running best (``best_value``/``best_id``, (k, C), updated in place),
    with the argmax row and column of their maps (``where`` // ``width``, ``where`` % ``width``).

    An image enters if its value is larger than the k-th best's, or equal with a smaller id (a
    NaN never enters); the entries are ordered by value descending, then id.
    """
    k, channels = best_value.shape
    top = empty_top(k, channels)
    kernels = _kernels()
    if kernels is not None:
        kernels[2](value, ids, where, width, best_value, best_id, *top)
        return top
    floor_value, floor_id = best_value[-1], best_id[-1]
    enters = (value > floor_value) | ((value == floor_value) & (ids[:, None] < floor_id))
    cols = np.nonzero(enters.any(axis=0))[0]
    if not len(cols):
        return top
    sub = np.where(enters[:, cols], value[:, cols], -np.inf)
    sub_ids = np.where(enters[:, cols], ids[:, None], NO_IMAGE)
    order = _sorted(sub, sub_ids, k)  # (min(k, n), cols): rows of the batch
    top_value = np.take_along_axis(sub, order, axis=0)
    top_id = np.take_along_axis(sub_ids, order, axis=0)
    taken = top_id != NO_IMAGE
    top[0][:len(order), cols] = np.where(taken, top_value, -np.inf)
    top[1][:len(order), cols] = top_id
    rank, col = np.nonzero(taken)
    image, column = order[rank, col], cols[col]
    position, w = where[image, column], width[column]
    top[2][rank, column] = position // w
    top[3][rank, column] = position % w
    both_value = np.concatenate([best_value[:, cols], top[0][:, cols]])
    both_id = np.concatenate([best_id[:, cols], top[1][:, cols]])
    keep = _sorted(both_value, both_id, k)
    best_value[:, cols] = np.take_along_axis(both_value, keep, axis=0)
    best_id[:, cols] = np.take_along_axis(both_id, keep, axis=0)
    return top


def merge_tops(a: Top, b: Top) -> Top:
    """The first k of two top-k tables of the same shape, in (value desc, id asc) order (``a``
    first on a tie of both)."""
    k = a[0].shape[0]
    if a[0].shape != b[0].shape:
        raise ValueError(f"top-k tables of shapes {a[0].shape} and {b[0].shape} do not merge")
    kernels = _kernels()
    if kernels is not None:
        out = tuple(np.empty_like(x) for x in a)
        kernels[3](*a, *b, *out)
        return out  # type: ignore[return-value]
    out = tuple(x.copy() for x in a)
    # only the columns where both sides hold images need sorting (a top-k is sorted, so its
    # first row says whether it holds any); elsewhere the merged top-k is one side's
    theirs = b[1][0] != NO_IMAGE
    cols = np.nonzero(theirs & (a[1][0] != NO_IMAGE))[0]
    only = theirs & (a[1][0] == NO_IMAGE)
    for mine, other in zip(out, b):
        mine[:, only] = other[:, only]
    if len(cols):
        order = _sorted(np.concatenate([a[0][:, cols], b[0][:, cols]]),
                        np.concatenate([a[1][:, cols], b[1][:, cols]]), k)
        for mine, x, y in zip(out, a, b):
            both = np.concatenate([x[:, cols], y[:, cols]])
            mine[:, cols] = np.take_along_axis(both, order, axis=0)
    return out  # type: ignore[return-value]


def _sorted(value: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Per column, the rows of the ``k`` best entries: value descending, then id ascending."""
    return np.lexsort((ids, -value), axis=0)[:k]


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
    by_rows, by_channels = _kernels()[:2]
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
#: running maxima and sums kept side by side for a contiguous map (one AVX-512 vector of float32)
LANES = 16


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
    """The loops: two reductions (positions outer for channels-last maps, channels outer
    otherwise), each filling rows ``lo:hi`` of its outputs: max, first position (a NaN wins),
    float64 mean; then :func:`batch_top`'s and :func:`merge_tops`'s."""
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
        # each map contiguous: LANES interleaved running maxima and sums (position p in lane
        # p % LANES), one vector each, then the lanes combined and the last positions added
        _, channels, positions = x.shape
        full = positions - positions % LANES
        best = np.empty(LANES, np.float32)
        at = np.empty(LANES, np.int64)
        total = np.empty(LANES, np.float64)
        for i in range(lo, hi):
            for c in range(channels):
                for j in range(LANES):
                    best[j] = -np.inf
                    at[j] = 0
                    total[j] = 0.0
                for p in range(0, full, LANES):
                    for j in range(LANES):
                        v = x[i, c, p + j]
                        total[j] += v
                        up = (v > best[j]) | (v != v)
                        best[j] = v if up else best[j]
                        at[j] = p + j if up else at[j]
                top, first, nan, s = best[0], at[0], best[0] != best[0], 0.0
                for j in range(LANES):  # the largest at its first position; the last NaN
                    s += total[j]
                    v = best[j]
                    if v != v:
                        first = at[j] if not nan or at[j] > first else first
                        top, nan = v, True
                    elif not nan and (v > top or (v == top and at[j] < first)):
                        top, first = v, at[j]
                for p in range(full, positions):
                    v = x[i, c, p]
                    s += v
                    if v > top or v != v:
                        top, first = v, p
                smax[i, c] = top
                where[i, c] = first
                smean[i, c] = s / positions

    @jit
    def before(v, i, w, j):  # pragma: no cover - compiled
        """(v, i) comes first in the (value desc, id asc) order."""
        return v > w or (v == w and i < j)

    @jit
    def top_of_batch(value, ids, where, width, best_value, best_id, top_value, top_id, top_y,
                     top_x):  # pragma: no cover - compiled
        n, channels = value.shape
        k = best_value.shape[0]
        # the batch's entries per column (at most k, sorted), a column's k slots side by side
        held = np.zeros(channels, np.int64)
        held_value = np.empty((channels, k))
        held_id = np.empty((channels, k), np.int64)
        held_at = np.empty((channels, k), np.int64)  # h * W + w
        floor_value, floor_id = best_value[k - 1].copy(), best_id[k - 1].copy()
        for i in range(n):  # rows outer: value is read in memory order
            image = ids[i]
            for c in range(channels):
                v = value[i, c]
                if not before(v, image, floor_value[c], floor_id[c]):
                    continue
                j = m = held[c]
                while j > 0 and before(v, image, held_value[c, j - 1], held_id[c, j - 1]):
                    j -= 1
                if j >= k:
                    continue
                for q in range(min(m, k - 1), j, -1):
                    held_value[c, q] = held_value[c, q - 1]
                    held_id[c, q] = held_id[c, q - 1]
                    held_at[c, q] = held_at[c, q - 1]
                held_value[c, j], held_id[c, j], held_at[c, j] = v, image, where[i, c]
                held[c] = min(m + 1, k)
        merged_value = np.empty(k)
        merged_id = np.empty(k, np.int64)
        for c in range(channels):
            m = held[c]
            for r in range(m):
                top_value[r, c], top_id[r, c] = held_value[c, r], held_id[c, r]
                top_y[r, c], top_x[r, c] = held_at[c, r] // width[c], held_at[c, r] % width[c]
            if m == 0:
                continue
            # the running best: the first k of it and the batch's entries
            p = q = 0
            for r in range(k):
                if q < m and before(held_value[c, q], held_id[c, q], best_value[p, c],
                                    best_id[p, c]):
                    merged_value[r], merged_id[r] = held_value[c, q], held_id[c, q]
                    q += 1
                else:
                    merged_value[r], merged_id[r] = best_value[p, c], best_id[p, c]
                    p += 1
            for r in range(k):
                best_value[r, c], best_id[r, c] = merged_value[r], merged_id[r]

    @jit
    def merge_two(av, ai, ay, ax, bv, bi, by, bx, ov, oi, oy, ox):  # pragma: no cover
        k, channels = av.shape
        for c in range(channels):
            p = q = 0
            for r in range(k):
                if before(bv[q, c], bi[q, c], av[p, c], ai[p, c]):
                    ov[r, c], oi[r, c], oy[r, c], ox[r, c] = bv[q, c], bi[q, c], by[q, c], bx[q, c]
                    q += 1
                else:
                    ov[r, c], oi[r, c], oy[r, c], ox[r, c] = av[p, c], ai[p, c], ay[p, c], ax[p, c]
                    p += 1

    return by_rows, by_channels, top_of_batch, merge_two

