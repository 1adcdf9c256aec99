"""Batch sizes of the perturbation methods: memory bound, coverage, tuning order."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

import convlens as cl
from convlens.batching import BatchSizer, max_batch

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


def _tune(monkeypatch, cost) -> tuple[BatchSizer, list[int]]:
    """Run a sizer over 1,000 items on a fake clock where a batch of n costs ``cost(n)``."""
    clock = [0.0]
    monkeypatch.setattr("convlens.batching.time.perf_counter", lambda: clock[0])
    sizer = BatchSizer(1000, 256, CPU)
    sizes = []
    for start, stop in sizer:
        clock[0] += cost(stop - start)
        sizes.append(stop - start)
    assert sum(sizes) == 1000
    return sizer, sizes


def test_tuning_keeps_the_fastest_size(monkeypatch):
    """A batch of n costs 5 + n units up to 16 items, 3 per item beyond."""
    sizer, sizes = _tune(monkeypatch, lambda n: 5 + n * (1 if n <= 16 else 3))
    assert sizes[:12] == [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32]
    assert sizer.best == 16 and set(sizes[12:-1]) == {16}


def test_tuning_spends_at_most_a_quarter_of_the_items(monkeypatch):
    """Every doubling pays, yet tuning stops at 2+4+...+64 = 126 of 1,000 items."""
    sizer, sizes = _tune(monkeypatch, lambda n: 100 + n)
    assert sizes[:12] == [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32]
    assert sizer.best == 32 and set(sizes[12:-1]) == {32}


def test_a_few_percent_of_timing_noise_does_not_end_the_search(monkeypatch):
    """Per item, each doubling is 2 % cheaper, but size 4's timing comes out 10 % slow."""
    noise = {4: 1.1}

    def cost(n: int) -> float:
        return n * 0.98 ** math.log2(n) * noise.get(n, 1.0)

    sizer, sizes = _tune(monkeypatch, cost)
    assert sizer.per_item[4] > sizer.per_item[2]  # the noisy size did look worse
    assert sizes[:12] == [1, 1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32]
    assert sizer.best == 32


def test_memory_budget_bounds_the_batch(tiny_model):
    # the largest layer output of the tiny model is 32 x 32 x 8 floats = 32 KiB per sample
    per_sample = 32 * 32 * 8 * 4 * 4
    assert max_batch(tiny_model, (32, 32), memory_budget=10 * per_sample) == 10
    assert max_batch(tiny_model, (64, 64), memory_budget=10 * per_sample) == 2  # 4x the pixels
    assert max_batch(tiny_model, (32, 32), memory_budget=1) == 1
    with pytest.raises(cl.ModelError, match="memory_budget must be a positive"):
        max_batch(tiny_model, (32, 32), memory_budget=0)


# -- CPU passes in chunks under glibc's mmap ceiling ----------------------------------------------
MIB = 1 << 20


def test_host_chunk_keeps_outputs_off_mmap_and_reserves_their_working_set(monkeypatch):
    from convlens import runtime

    monkeypatch.setattr(runtime, "_tuned", False)
    monkeypatch.setattr(runtime, "_glibc", lambda: True)
    monkeypatch.setattr(runtime, "settle_heap", lambda: True)
    reserved = []
    monkeypatch.setattr(runtime, "reserve_heap", reserved.append)
    assert (runtime.HOST_CHUNK_BYTES, runtime.RESERVE_OUTPUTS) == (30 * MIB, 8)
    per_image = 96 * 112 * 112 * 4  # EfficientNet-Lite0's largest output: 4.59 MiB
    # 30 MiB holds 6 such images: 8 go as 4 + 4, 32 as 6 x 5 + 2, 5 and 2 whole
    assert runtime.host_chunk(8, per_image, CPU) == 4
    assert reserved == [8 * 4 * per_image]  # eight chunk outputs of free heap: 147 MiB
    assert runtime.host_chunk(32, per_image, CPU) == 6
    assert runtime.host_chunk(5, per_image, CPU) == 5
    assert runtime.host_chunk(2, per_image, CPU) == 2
    # ResNet-50's largest (64 x 112 x 112, 3.06 MiB): 9 fit, so 8 go whole and 32 as 4 x 8
    assert runtime.host_chunk(8, 64 * 112 * 112 * 4, CPU) == 8
    assert runtime.host_chunk(32, 64 * 112 * 112 * 4, CPU) == 8
    # another limit: 0.85 x 32 MiB holds 5 of EfficientNet-Lite0's: 8 as 4 + 4
    assert runtime.host_chunk(8, per_image, CPU, limit=int(0.85 * 32 * MIB)) == 4
    # a pass that keeps 27 MiB of each image (a scan's recorded maps) reserves them too:
    # 8 x 4.59 + 27 = 63.7 MiB an image, 8 of them within the 512 MiB limit, so 32 still go as 6s
    reserved.clear()
    assert runtime.host_chunk(32, per_image, CPU, kept_bytes=27 * MIB) == 6
    assert reserved == [6 * (8 * per_image + 27 * MIB)]
    # keeping 100 MiB an image, 512 MiB hold the working sets of 3: 32 go as 3 x 10 + 2
    assert runtime.host_chunk(32, per_image, CPU, kept_bytes=100 * MIB) == 3
    # a smaller reserve limit: 64 MiB holds the working set of 1 image (8 x 4.59 MiB)
    monkeypatch.setattr(runtime, "RESERVE_MAX", 64 * MIB)
    assert runtime.host_chunk(8, per_image, CPU) == 1
    reserved.clear()
    assert runtime.host_chunk(8, 40 * MIB, CPU) == 8  # one image is over already: no gain
    assert runtime.host_chunk(8, per_image, torch.device("meta")) == 8  # not the host's heap
    monkeypatch.setattr(runtime, "_tuned", True)
    assert runtime.host_chunk(8, per_image, CPU) == 8  # a tuned allocator maps nothing
    assert reserved == []


@pytest.mark.parametrize("target", [None, "top-2"])
def test_passes_in_chunks_give_the_maps_of_one_pass(monkeypatch, target):
    from convlens import runtime
    from convlens.gradients import largest_output_bytes

    from .conftest import tiny_convnet

    model = cl.load_model(tiny_convnet(classes=3, seed=1), input_size=(24, 24),
                          preprocess="unit", name="tiny")
    pixels = torch.rand(5, 24, 24, 3, generator=torch.Generator().manual_seed(0)) * 255
    whole = {m: model.cam(pixels, method=m, target=target) for m in ("gradcam", "layercam")}
    chunks = []
    monkeypatch.setattr(runtime, "_tuned", False)
    monkeypatch.setattr(runtime, "_glibc", lambda: True)
    largest = largest_output_bytes(model)  # a limit that holds 2 images' outputs
    monkeypatch.setattr(runtime, "HOST_CHUNK_BYTES", int(2.5 * largest))
    capture = type(model.capture([]))
    real_run = capture.run

    def counted(self, inputs, *args, **kwargs):
        chunks.append(inputs.shape[0])
        return real_run(self, inputs, *args, **kwargs)

    monkeypatch.setattr(capture, "run", counted)
    for method, expected in whole.items():
        got = model.cam(pixels, method=method, target=target)
        torch.testing.assert_close(torch.from_numpy(got.heatmap),
                                   torch.from_numpy(expected.heatmap), rtol=1e-5, atol=1e-6)
        assert got.target == expected.target
    assert chunks[:3] == [2, 2, 1]
