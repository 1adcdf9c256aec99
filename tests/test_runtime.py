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


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(runtime, "_tuned", None)
    monkeypatch.setattr(runtime.platform, "libc_ver", lambda: ("musl", "1.2"))
    assert runtime.tune_allocator() is False
