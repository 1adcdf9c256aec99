"""Process-wide speed settings for CPU inference (the ``convlens`` command applies them).

glibc's ``malloc`` serves every block above a size threshold (128 kB, adapting up to 32 MB) with
a fresh ``mmap`` and gives it back to the system on ``free``. A forward pass allocates and frees
the same large activation tensors on every call, so each call page-faults its whole working set
again: for a batch of 8 images at 224x224 that is tens of MB per layer, and the pass becomes
slower per image than a batch of 1. Keeping freed blocks in the process (what jemalloc/tcmalloc,
recommended by PyTorch's CPU performance guide, also do) removes that cost: on a 2-core machine
EfficientNet-Lite0 at batch 8 runs about 1.4x faster per image.

The price is that the process keeps its peak memory until it exits (up to ``keep`` bytes of free
memory at the heap's top are not returned). That suits a command-line run or a server; in a
notebook, call :func:`tune_allocator` yourself if you want it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform

__all__ = ["tune_allocator"]

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

_tuned: bool | None = None


def tune_allocator(keep: int = 1 << 30) -> bool:
    """Stop glibc from unmapping large blocks after each use; True when it took effect.

    Does nothing (and returns False) on other C libraries (macOS, Windows, musl). Idempotent.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    _tuned = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    # mallopt returns 1 on success, 0 on error
    _tuned = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, min(int(keep), 2**31 - 1))
    )
    return _tuned
