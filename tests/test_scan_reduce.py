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
    return [plain, last, ties, nan]


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
