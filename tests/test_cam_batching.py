"""Batch sizes of the perturbation methods: memory bound, coverage, tuning order."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch

import convlens as cl
from convlens.cam.batching import BatchSizer, max_batch

CPU = torch.device("cpu")


@pytest.mark.parametrize("total", [1, 2, 5, 37, 300])
def test_every_item_is_run_once_in_order(total):
    sizer = BatchSizer(total, 64, CPU)
    spans = list(sizer)
    assert spans[0][0] == 0 and spans[-1][1] == total
    assert all(a[1] == b[0] for a, b in pairwise(spans))
    sizes = [stop - start for start, stop in spans]
    assert max(sizes) <= 64
    assert sizes[:2] == [1, 1][: len(sizes[:2])]  # tuning starts small, each size twice


def test_fixed_batch_size():
    assert [stop - start for start, stop in BatchSizer(10, 256, CPU, fixed=4)] == [4, 4, 2]
    with pytest.raises(cl.ModelError, match="batch_size must be at least 1"):
        BatchSizer(10, 256, CPU, fixed=0)


def test_tuning_keeps_the_fastest_size(monkeypatch):
    """Fake clock: a batch of n costs 5 + n units up to 16 items, 3 per item beyond."""
    clock = [0.0]
    monkeypatch.setattr("convlens.cam.batching.time.perf_counter", lambda: clock[0])
    sizer = BatchSizer(1000, 256, CPU)
    sizes = []
    for start, stop in sizer:
        n = stop - start
        clock[0] += 5 + n * (1 if n <= 16 else 3)
        sizes.append(n)
    assert sizes[:12] == [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32]
    assert sizer.best == 16 and set(sizes[12:-1]) == {16} and sum(sizes) == 1000


def test_tuning_spends_at_most_a_quarter_of_the_items(monkeypatch):
    """Fake clock where every doubling pays: tuning still stops at 2+4+...+32 = 126 of 1000."""
    clock = [0.0]
    monkeypatch.setattr("convlens.cam.batching.time.perf_counter", lambda: clock[0])
    sizer = BatchSizer(1000, 256, CPU)
    sizes = []
    for start, stop in sizer:
        n = stop - start
        clock[0] += 100 + n
        sizes.append(n)
    assert sizes[:12] == [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32]
    assert sizer.best == 32 and set(sizes[12:-1]) == {32} and sum(sizes) == 1000


def test_memory_budget_bounds_the_batch(tiny_model):
    # the largest layer output of the tiny model is 32 x 32 x 8 floats = 32 KiB per sample
    per_sample = 32 * 32 * 8 * 4 * 4
    assert max_batch(tiny_model, (32, 32), memory_budget=10 * per_sample) == 10
    assert max_batch(tiny_model, (64, 64), memory_budget=10 * per_sample) == 2  # 4x the pixels
    assert max_batch(tiny_model, (32, 32), memory_budget=1) == 1
    with pytest.raises(cl.ModelError, match="memory_budget must be a positive"):
        max_batch(tiny_model, (32, 32), memory_budget=0)
