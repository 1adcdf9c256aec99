"""Process settings for CPU speed: glibc keeps freed activation memory instead of unmapping it."""

from __future__ import annotations

import ctypes
import platform

import pytest
import torch

from convlens import runtime

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost",
    )]


def _mallinfo() -> _MallInfo2:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2()


@pytest.mark.skipif(not GLIBC, reason="the setting exists only for glibc")
def test_big_blocks_come_from_the_heap_and_stay_after_free():
    assert runtime.tune_allocator() is True
    assert runtime.tune_allocator() is True  # idempotent
    size = 64 << 20  # a batch's activations; untuned glibc maps such a block on its own
    mapped = _mallinfo().hblkhd
    block = torch.ones(size // 4)
    assert _mallinfo().hblkhd == mapped  # not a private mapping, unmapped again on free
    free = _mallinfo().fordblks
    del block
    assert _mallinfo().fordblks > free + 0.99 * size  # kept in the process for the next pass


_CHILD = """
import resource, torch
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(),
                          torch.nn.Conv2d(32, 32, 3, padding=1)).eval()
x = torch.randn(8, 3, 256, 256)  # 64 MiB activations: above glibc's 32 MiB mmap ceiling
faults = []
with torch.no_grad():
    for _ in range(6):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(*faults)
"""


def _pass_faults(env: dict[str, str]) -> list[int]:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _CHILD], env={**clean, **env},
                         capture_output=True, text=True, check=True)
    return [int(n) for n in out.stdout.split()]


@pytest.mark.skipif(not GLIBC, reason="the setting exists only for glibc")
def test_worker_processes_start_with_the_setting(monkeypatch):
    monkeypatch.setattr(runtime, "_tuned", False)
    assert runtime.allocator_env() == {}  # an untuned process passes nothing on
    monkeypatch.setattr(runtime, "_tuned", True)
    env = runtime.allocator_env()
    assert env["MALLOC_MMAP_MAX_"] == "0" and env["MALLOC_ARENA_MAX"] == "1"
    # a process started with it reuses a pass's freed activations once its heap has grown (where
    # small blocks land decides whether that takes one pass or three); without, every pass maps
    # its two 64 MiB activations afresh and faults their 32k pages in again
    assert min(_pass_faults({})[3:]) > 30_000
    assert sum(_pass_faults(env)[3:]) < 1_000


_SETTLE_CHILD = """
import ctypes, resource, sys, torch
from convlens import runtime

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
settled = runtime.settle_heap() if sys.argv[1] == "1" else False
before = libc.mallinfo2().hblkhd
block = torch.empty(30 << 18)  # 30 MiB, under the 32 MiB ceiling
mapped = libc.mallinfo2().hblkhd - before
del block
faults = []
for _ in range(8):  # passes whose working set is three 10 MiB activations
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.ones(10 << 18) for _ in range(3)]
    del blocks
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(settled, mapped, *faults)
"""


@pytest.mark.skipif(not GLIBC, reason="the setting exists only for glibc")
def test_a_worker_started_with_the_setting_knows_it(monkeypatch):
    # a Ray actor gets allocator_env: its glibc keeps freed memory from the start, so convlens
    # there neither settles the heap nor cuts batches into chunks
    import os
    import subprocess
    import sys

    monkeypatch.setattr(runtime, "_tuned", True)
    child = ("import torch; from convlens import runtime; "
             "print(runtime._tuned, runtime.host_chunk(32, 5 << 20, torch.device('cpu')))")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    run = [sys.executable, "-c", child]
    tuned = subprocess.run(run, env={**clean, **runtime.allocator_env()}, capture_output=True,
                           text=True, check=True).stdout.split()
    plain = subprocess.run(run, env=clean, capture_output=True, text=True,
                           check=True).stdout.split()
    assert tuned == ["True", "32"]
    assert plain == ["None", "6"]  # 5 MiB outputs: 6 a chunk stay under 30 MiB


def _settle_child(settle: bool) -> list[int]:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _SETTLE_CHILD, "1" if settle else "0"],
                         env=clean, capture_output=True, text=True, check=True)
    settled, *numbers = out.stdout.split()
    assert settled == str(settle)
    return [int(n) for n in numbers]


@pytest.mark.skipif(not GLIBC, reason="glibc's adaptive threshold")
def test_a_settled_heap_serves_activations_under_the_ceiling_without_faults():
    # a fresh process maps a 30 MiB block (its threshold is still low); settled, glibc's own
    # threshold sits at 31 MiB: the block comes from the heap, and passes of three 10 MiB
    # activations reuse the heap (under the 62 MiB trim threshold): no page faults after warm-up
    mapped, *_ = _settle_child(settle=False)
    assert mapped >= 30 << 20
    mapped, *faults = _settle_child(settle=True)
    assert mapped == 0
    assert faults[0] > 7_000  # the first pass grows the heap: 3 x 2,560 pages
    assert sum(faults[4:]) < 300


_RESERVE_CHILD = """
import ctypes, resource, sys
from convlens import runtime

libc = runtime._libc()
runtime.settle_heap()
reserved = runtime.reserve_heap(int(sys.argv[1]) << 20) if sys.argv[1] != "0" else False
released, faults = 0, []
for i in range(8):  # passes whose working set is five 20 MiB activations (100 MiB)
    if i == 6:
        released = runtime.release_heap()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [libc.malloc(20 << 20) for _ in range(5)]
    for block in blocks:
        ctypes.memset(block, 1, 20 << 20)
    for block in blocks:  # freed first to last: the last one joins them all to the heap's top
        libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
print(reserved, released >> 20, *faults)
"""


def _reserve_child(mib: int) -> tuple[str, int, list[int]]:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _RESERVE_CHILD, str(mib)], env=clean,
                         capture_output=True, text=True, check=True)
    reserved, released, *faults = out.stdout.split()
    return reserved, int(released), [int(n) for n in faults]


@pytest.mark.skipif(not GLIBC, reason="glibc's trim of the heap's top")
def test_a_reserved_heap_keeps_a_working_set_over_the_trim_line():
    # 100 MiB of activations, freed at the end of each pass, lie over glibc's trim line (62 MiB
    # once settled): the heap's top is handed back and every pass faults its 25,600 pages again.
    # With 128 MiB reserved under a live block the passes reuse it: after the first (which
    # touches the reserve) nothing is faulted, until the reserve is released (pass 6).
    # The blocks are malloc'd directly: torch's small allocations would land between them in a
    # layout that differs from one environment to the next (and with it the trim).
    reserved, released, faults = _reserve_child(0)
    assert reserved == "False" and released == 0
    assert min(faults) > 25_000
    reserved, released, faults = _reserve_child(128)
    assert reserved == "True" and released == 128
    assert faults[0] > 25_000
    assert sum(faults[1:6]) < 500
    assert faults[6] > 25_000


def test_reserve_heap_needs_a_settled_untuned_glibc(monkeypatch):
    monkeypatch.setattr(runtime, "_reserved", 0)
    monkeypatch.setattr(runtime, "_settled", False)
    assert runtime.reserve_heap(1 << 20) is False  # the blocks would be mmapped
    monkeypatch.setattr(runtime, "_settled", True)
    monkeypatch.setattr(runtime, "_tuned", True)
    assert runtime.reserve_heap(1 << 20) is False
    monkeypatch.setattr(runtime, "_tuned", False)
    monkeypatch.setattr(runtime, "_glibc", lambda: False)
    assert runtime.reserve_heap(1 << 20) is False
    monkeypatch.setattr(runtime, "_reserved", 2 << 20)
    monkeypatch.setattr(runtime, "_glibc", lambda: True)
    assert runtime.reserve_heap(1 << 20) is False  # as much is kept already


def test_settle_heap_leaves_other_c_libraries_and_tuned_processes_alone(monkeypatch):
    monkeypatch.setattr(runtime, "_settled", False)
    monkeypatch.setattr(runtime, "_glibc", lambda: False)
    assert runtime.settle_heap() is False
    monkeypatch.setattr(runtime, "_glibc", lambda: True)
    monkeypatch.setattr(runtime, "_tuned", True)
    assert runtime.settle_heap() is False


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(runtime, "_tuned", None)
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert runtime.tune_allocator() is False


def _convnet() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 3, padding=1),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3),
    ).eval()


class Counted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


def _is_channels_last(network: torch.nn.Module) -> bool:
    weight = next(p for p in network.parameters() if p.ndim == 4)
    return weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def _timings(monkeypatch, channels_last_seconds: float, contiguous_seconds: float = 0.010):
    """Fake forward times by the network's memory format (tiny networks are probed too)."""
    monkeypatch.setattr(runtime, "PROBE_MIN_PARAMETERS", 0)
    def best_time(network, x, rounds):
        return channels_last_seconds if _is_channels_last(network) else contiguous_seconds

    monkeypatch.setattr(runtime, "_best_time", best_time)


def test_channels_last_is_kept_only_when_clearly_faster(monkeypatch):
    net, x = _convnet(), torch.rand(2, 3, 16, 16)
    expected = net(x)
    _timings(monkeypatch, 0.009)  # 1.11x faster
    assert runtime.prefers_channels_last(net, x) is True
    assert _is_channels_last(net)
    assert torch.allclose(net(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-6)
    _timings(monkeypatch, 0.0098)  # 2 % faster: not worth a switch
    assert runtime.prefers_channels_last(net, x) is False
    assert not _is_channels_last(net)


def test_probe_skips_small_flat_and_hooked_networks(monkeypatch):
    net, x = _convnet(), torch.rand(1, 3, 16, 16)
    _timings(monkeypatch, 1e-5, contiguous_seconds=1e-4)
    assert runtime.prefers_channels_last(net, x) is False  # too small to be worth a switch
    assert not _is_channels_last(net)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(768, 2))
    assert runtime.prefers_channels_last(mlp, x) is False
    monkeypatch.undo()
    counted = torch.nn.Sequential(Counted(), _convnet())
    assert runtime.prefers_channels_last(counted, x) is False  # under a million parameters
    assert counted[0].calls == 0  # decided without running it
    _timings(monkeypatch, 0.001)
    handle = net[0].register_forward_hook(lambda *args: None)
    assert runtime.prefers_channels_last(net, x) is None  # its hook would see the extra passes
    assert not _is_channels_last(net)
    handle.remove()
    assert runtime.prefers_channels_last(net, x) is True


def test_torch_model_decides_at_first_unhooked_use(monkeypatch):
    import convlens as cl

    _timings(monkeypatch, 0.001)
    net = _convnet()
    handle = net[0].register_forward_hook(lambda *args: None)  # e.g. a user's own hook
    model = cl.load_model(net, input_size=(16, 16))
    pixels = torch.rand(2, 16, 16, 3) * 255
    model.logits(pixels)
    assert model.channels_last is None  # not measured while hooked
    handle.remove()
    logits = model.logits(pixels)
    assert model.channels_last is True and _is_channels_last(model.network)
    assert model.inputs(pixels).is_contiguous(memory_format=torch.channels_last)
    fixed = cl.load_model(_convnet(), input_size=(16, 16), channels_last=False)
    assert torch.allclose(fixed.logits(pixels), logits, atol=1e-5)
    assert fixed.channels_last is False and not _is_channels_last(fixed.network)


def test_weights_converted_under_inference_mode_still_take_gradients(monkeypatch):
    net, x = _convnet(), torch.rand(2, 3, 16, 16)
    _timings(monkeypatch, 0.001)
    with torch.inference_mode():
        assert runtime.prefers_channels_last(net, x) is True
    assert not any(p.is_inference() for p in net.parameters())
    net(x.requires_grad_(True)).sum().backward()
    assert x.grad is not None
