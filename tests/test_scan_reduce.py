"""The scan's per-map reductions: the fused numba loops against torch's max pooling and mean."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convlens.scan import reduce


def _maps() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    plain = torch.randn(5, 3, 4, 6, generator=g)
    last = torch.randn(5, 7, 3, 5, generator=g).contiguous(memory_format=torch.channels_last)
    ties = torch.zeros(5, 2, 3, 3)  # all equal: the first position; a tie later does not win
    ties[:, 1, 2, 2] = 1.0
    ties[:, 1, 0, 1] = 1.0
    nan = torch.randn(5, 2, 4, 4, generator=g).contiguous(memory_format=torch.channels_last)
    nan[0, 0, 1, 2] = float("nan")  # a NaN wins, as in max pooling
    nan[1, 1, 0, 0] = float("nan")
    # contiguous maps longer than the lanes (35 positions: two rounds of 16 and 3 more)
    long = torch.randn(5, 3, 5, 7, generator=g)
    flat = long.view(5, 3, 35)
    flat[0, 0, [6, 17]] = 9.0  # equal maxima in lanes 6 and 1: the first position (6) wins
    flat[0, 1, [10, 33]] = 9.0  # in a lane and in the last positions: 10
    flat[1, 0, [5, 18]] = float("nan")  # NaNs in two lanes: the last (18), as max pooling
    flat[1, 1, [7, 34]] = float("nan")  # in a lane and in the last positions: 34
    flat[2, 2] = float("-inf")  # nothing larger than -inf: position 0
    return [plain, last, ties, nan, long]


def _reference(maps: list[torch.Tensor]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    smax, where, smean = [], [], []
    for t in maps:
        n, c = t.shape[:2]
        value, index = F.adaptive_max_pool2d(t.contiguous(), 1, return_indices=True)
        smax.append(value.reshape(n, c).double())
        where.append(index.reshape(n, c))
        smean.append(t.double().mean(dim=(2, 3)))
    return tuple(torch.cat(x, dim=1).numpy() for x in (smax, where, smean))


@pytest.mark.parametrize("fused", [True, False])
def test_spatial_stats_are_max_pooling_and_the_mean(monkeypatch, fused):
    if fused:
        assert reduce._kernels() is not None, "numba (the scan extra) is installed by make test"
    else:
        monkeypatch.setattr(reduce, "_KERNELS", None)
    maps = _maps()
    smax, where, smean = reduce.spatial_stats(maps)
    ref_max, ref_where, ref_mean = _reference(maps)
    np.testing.assert_array_equal(smax, ref_max)  # NaN where NaN
    np.testing.assert_array_equal(where, ref_where)
    np.testing.assert_allclose(smean, ref_mean, rtol=1e-6, atol=1e-7)
    assert where[0, 3 + 7 + 1] == 1  # the tie: (0, 1) before (2, 2)
    assert where[0, 3 + 7 + 2] == 1 * 4 + 2 and where[1, 3 + 7 + 2 + 1] == 0  # the NaNs
    long = 3 + 7 + 2 + 2
    assert where[0, long] == 6 and where[0, long + 1] == 10
    assert where[1, long] == 18 and where[1, long + 1] == 34 and np.isnan(smax[1, long])
    assert where[2, long + 2] == 0 and smax[2, long + 2] == -np.inf
    assert smax.dtype == smean.dtype == np.float64 and where.dtype == np.int64


def test_other_layouts_and_dtypes_take_the_torch_path(monkeypatch):
    calls = []
    monkeypatch.setattr(reduce, "_numba_stats", lambda maps: calls.append(maps))
    g = torch.Generator().manual_seed(1)
    strided = torch.randn(2, 3, 8, 8, generator=g)[:, :, ::2, ::2]  # neither layout
    double = torch.randn(2, 3, 4, 4, generator=g).double()
    for maps in ([strided], [double], [torch.randn(2, 3, 4, 4, generator=g), strided]):
        got, expected = reduce.spatial_stats(maps), _reference(maps)
        for a, b in zip(got, expected):  # (torch's mean: float32)
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert calls == []
    reduce.spatial_stats([torch.randn(2, 3, 4, 4, generator=g)])
    assert len(calls) == (1 if reduce._kernels() is not None else 0)


@pytest.fixture(params=[True, False], ids=["numba", "numpy"])
def loops(request, monkeypatch):
    """The top-k loops both ways: numba (the scan extra, installed by make test) and NumPy."""
    if request.param:
        assert reduce._kernels() is not None
    else:
        monkeypatch.setattr(reduce, "_KERNELS", None)
    return request.param


def test_batch_top_takes_what_beats_the_running_kth_and_keeps_it(loops):
    best_value, best_id = reduce.empty_top(2, 2)[:2]
    # column 0: values 3 5 5 1; column 1: NaN only
    value = np.array([[3.0, np.nan], [5.0, np.nan], [5.0, np.nan], [1.0, np.nan]])
    where = np.array([[0, 0], [7, 0], [5, 0], [1, 0]])
    top = reduce.batch_top(value, np.arange(4), where, np.array([3, 3]), best_value, best_id)
    np.testing.assert_array_equal(top[0][:, 0], [5.0, 5.0])  # a tie: the smaller id first
    np.testing.assert_array_equal(top[1][:, 0], [1, 2])
    np.testing.assert_array_equal(top[2][:, 0], [2, 1])  # rows: 7 // 3, 5 // 3
    np.testing.assert_array_equal(top[3][:, 0], [1, 2])  # columns: 7 % 3, 5 % 3
    np.testing.assert_array_equal(top[1][:, 1], [reduce.NO_IMAGE] * 2)  # a NaN never enters
    np.testing.assert_array_equal(best_id[:, 0], [1, 2])
    # the next batch: 5 with id 4 does not beat (5, id 2); 6 does
    value = np.array([[5.0, 0.0], [4.0, 0.0], [6.0, 0.0]])
    where = np.array([[0, 0], [0, 0], [8, 4]])
    top = reduce.batch_top(value, np.arange(4, 7), where, np.array([3, 3]), best_value, best_id)
    np.testing.assert_array_equal(top[0][:, 0], [6.0, -np.inf])
    np.testing.assert_array_equal(top[1][:, 0], [6, reduce.NO_IMAGE])
    assert (top[2][0, 0], top[3][0, 0]) == (2, 2)
    np.testing.assert_array_equal(best_value[:, 0], [6.0, 5.0])
    np.testing.assert_array_equal(best_id[:, 0], [6, 1])
    np.testing.assert_array_equal(top[1][:, 1], [4, 5])  # zeros, in id order
    np.testing.assert_array_equal(best_id[:, 1], [4, 5])


def _random_batches(seed: int):
    rng = np.random.default_rng(seed)
    for start in range(0, 40, 8):
        value = rng.integers(0, 6, (8, 30)).astype(np.float64)  # many ties
        value[rng.random((8, 30)) < 0.05] = np.nan
        yield value, np.arange(start, start + 8), rng.integers(0, 20, (8, 30))


def test_both_top_k_loops_give_the_same_tables_and_the_sorted_truth(monkeypatch):
    k, width = 3, np.full(30, 5)
    tables = {}
    for fused in (True, False):
        monkeypatch.setattr(reduce, "_KERNELS", False if fused else None)
        best = reduce.empty_top(k, 30)[:2]
        merged = reduce.empty_top(k, 30)
        for value, ids, where in _random_batches(0):
            merged = reduce.merge_tops(merged, reduce.batch_top(value, ids, where, width, *best))
        tables[fused] = merged
    for a, b in zip(tables[True], tables[False]):
        np.testing.assert_array_equal(a, b)
    # the truth: per column, every (value, id) sorted (a NaN never enters)
    batches = list(_random_batches(0))
    value = np.concatenate([b[0] for b in batches])
    where = np.concatenate([b[2] for b in batches])
    for c in range(30):
        rows = sorted((v, i) for i, v in enumerate(value[:, c]) if v == v)
        rows = sorted(rows, key=lambda r: (-r[0], r[1]))[:k]
        np.testing.assert_array_equal(tables[True][0][:, c], [r[0] for r in rows])
        np.testing.assert_array_equal(tables[True][1][:, c], [r[1] for r in rows])
        np.testing.assert_array_equal(tables[True][2][:, c], [where[r[1], c] // 5 for r in rows])


def test_merge_tops_is_the_first_k_of_both_in_order(loops):
    a = reduce.empty_top(3, 3)
    b = reduce.empty_top(3, 3)
    a[0][:, 0], a[1][:, 0], a[2][:, 0] = [9.0, 4.0, 4.0], [5, 1, 7], [1, 2, 3]
    b[0][:2, 0], b[1][:2, 0], b[2][:2, 0] = [4.0, 3.0], [2, 0], [4, 5]
    b[0][:1, 2], b[1][:1, 2] = [1.0], [8]  # a holds nothing there
    value, ids, y, _ = reduce.merge_tops(a, b)
    np.testing.assert_array_equal(value[:, 0], [9.0, 4.0, 4.0])
    np.testing.assert_array_equal(ids[:, 0], [5, 1, 2])
    np.testing.assert_array_equal(y[:, 0], [1, 2, 4])
    np.testing.assert_array_equal(ids[:, 1], [reduce.NO_IMAGE] * 3)
    np.testing.assert_array_equal(ids[:, 2], [8, reduce.NO_IMAGE, reduce.NO_IMAGE])
    with pytest.raises(ValueError, match="do not merge"):  # (numba would read past a table)
        reduce.merge_tops(a, reduce.empty_top(2, 3))
