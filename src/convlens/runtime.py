"""Speed settings: the memory format a network runs fastest in, and glibc's malloc (opt-in).

:func:`prefers_channels_last` times a network in both memory formats once and keeps the faster
(``TorchModel`` asks it at first use unless told ``channels_last=``).

:func:`tune_allocator` is process-wide and opt-in (the ``convlens`` command applies it):

glibc's ``malloc`` serves every block above a size threshold (128 kB, adapting up to 32 MB) with
a fresh ``mmap`` and gives it back to the system on ``free``. A forward pass allocates and frees
the same large activation tensors on every call, so each call page-faults its whole working set
again: for a batch of 8 images at 224x224 that is tens of MB per layer, and the pass becomes
slower per image than a batch of 1. Keeping freed blocks in the process (what jemalloc/tcmalloc,
recommended by PyTorch's CPU performance guide, also do) removes that cost: on a 2-core machine
EfficientNet-Lite0 at batch 8 runs about 1.4x faster per image.

The price is that the process keeps its peak memory until it exits (up to ``keep`` bytes of free
memory at the heap's top are not returned). That suits a command-line run or a server; in a
notebook, call :func:`tune_allocator` yourself if you want it. It is not applied per call:
glibc's ``mallopt`` cannot be read back, and any call to it switches glibc's dynamic mmap
threshold off for the rest of the process, so a "scoped" setting would not restore the
allocator the process had (and, trimmed after each call, it faulted more than the default at
batch 8; see benchmarks/bench_peers.py).

What convlens does without a setting: :func:`settle_heap` frees one block just under glibc's
32 MiB ceiling once, so that glibc's own adaptive threshold serves the activations from the heap
(its state after any such free); :func:`host_chunk` cuts a CPU batch into even chunks with no
layer output above the ceiling (mapped afresh on every call whatever the process did before),
and :func:`reserve_heap` keeps free heap for a chunk's working set under one small live block,
where glibc's trim of the heap's top does not reach it (:func:`release_heap` lets it go). The
CAM pass and the scan use them. A worker process convlens starts (a Ray actor) gets this
process's setting through :func:`allocator_env`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import time

import torch

__all__ = [
    "allocator_env", "host_chunk", "prefers_channels_last", "release_heap", "reserve_heap",
    "settle_heap", "tune_allocator",
]

# mallopt parameters, from glibc's <malloc.h>
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4

#: whether glibc keeps freed memory: set by tune_allocator, or read from the environment of a
#: process started with allocator_env (a Ray actor), whose glibc took the setting at its start
_tuned: bool | None = (
    True if os.environ.get("MALLOC_MMAP_MAX_") == "0" and platform.system() == "Linux"
    and platform.libc_ver()[0] == "glibc" else None
)


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


def allocator_env(keep: int = 1 << 30) -> dict[str, str]:
    """:func:`tune_allocator`'s setting as environment variables, for a worker process that
    convlens starts (a Ray actor), read by glibc when that process starts; empty when this
    process is not tuned. Also one malloc arena: Ray runs an actor's calls in a thread of its
    own, and a thread's arena unmaps its freed heaps whatever the thresholds (measured: 160k page
    faults per batch of 32 on EfficientNet-Lite0 with ``mallopt`` alone, none with this)."""
    if not _tuned:
        return {}
    return {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(min(int(keep), 2**31 - 1)),
            "MALLOC_ARENA_MAX": "1"}


#: glibc's largest adaptive mmap threshold (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit): a block above
#: it is always a fresh ``mmap``, page-faulted in on every call and unmapped on free.
GLIBC_MMAP_CEILING = 32 << 20
#: the block :func:`settle_heap` frees once: just under the ceiling, with its header and page
SETTLE_BYTES = GLIBC_MMAP_CEILING - (1 << 20)
#: a chunk's largest layer output for a pass: under the settled mmap threshold (31 MiB), so no
#: activation is mapped afresh
HOST_CHUNK_BYTES = 30 << 20
#: a pass's working set, in its largest layer output (input, output, residuals, padding copies,
#: oneDNN's scratch, the tensors autograd keeps from the CAM layer on): the free heap that
#: :func:`reserve_heap` keeps for the chunk (ResNet-50 at batch 8 needed 6)
RESERVE_OUTPUTS = 8
#: the most free heap :func:`reserve_heap` keeps: a batch whose working set is larger goes in
#: smaller chunks
RESERVE_MAX = 512 << 20
#: the reserve is made of blocks this large (under the settled threshold: from the heap)
_RESERVE_BLOCK = 16 << 20
#: the live block that keeps the reserve below the heap's top
_PIN_BYTES = 1 << 20

_settled = False
_libc_handle: ctypes.CDLL | None = None
_pins: list[int] = []  # the live blocks over each reserve (addresses from glibc's malloc)
_reserved = 0  # bytes of free heap kept under the pins


def _libc() -> ctypes.CDLL | None:
    """glibc's malloc and free through ctypes (None where it cannot be loaded)."""
    global _libc_handle
    if _libc_handle is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            return None
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        libc.realloc.restype = ctypes.c_void_p
        libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc_handle = libc
    return _libc_handle


def settle_heap() -> bool:
    """Let glibc adapt its mmap threshold to the largest activations once; True if done now.

    glibc maps every block at or above its threshold afresh (and faults it in), and raises the
    threshold only to the size of a mapped block once freed. Freeing one block just under the
    32 MiB ceiling moves the threshold to it: the state glibc reaches by itself once any
    program frees such a buffer. No ``mallopt``, no setting: glibc's own adaptation (nothing on
    other C libraries, or when tuned).
    """
    global _settled
    if _settled or _tuned or not _glibc():
        return False
    _settled = True
    libc = _libc()
    if libc is None:
        return False
    libc.free(libc.malloc(SETTLE_BYTES))
    return True


def reserve_heap(nbytes: int) -> bool:
    """Keep at least ``nbytes`` of freed heap for the next passes; True if the reserve grew.

    glibc hands the heap's top back to the system whenever more than twice its mmap threshold
    (62 MiB once settled) lies free there, so a pass whose working set is larger (ResNet-50 at
    batch 8: ~150 MB) page-faults all of it in again on every call. Blocks allocated here and
    freed under one small live block (the pin, 1 MiB) are free heap that is not at the top:
    glibc serves the next passes' activations from them and keeps their pages. Nothing about the
    allocator changes; the process keeps at most ``nbytes`` (what the passes touched) until
    :func:`release_heap`. Only after :func:`settle_heap` (the blocks must come from the heap), on
    glibc, untuned; at most :data:`RESERVE_MAX`.
    """
    global _reserved
    nbytes = min(int(nbytes), RESERVE_MAX)
    if nbytes <= _reserved or _tuned or not _glibc() or not _settled:
        return False
    libc = _libc()
    if libc is None:
        return False
    blocks: list[int] = []
    pin = None
    try:
        for _ in range(-(-nbytes // _RESERVE_BLOCK)):
            block = libc.malloc(_RESERVE_BLOCK)
            if not block:
                return False
            blocks.append(block)
        # the highest block shrinks in place to the pin (its tail rejoins the heap's top); the
        # others, all below it, become the reserve when freed
        highest = max(blocks)
        pin = libc.realloc(highest, _PIN_BYTES)
        blocks.remove(highest)
        if pin != highest:  # (glibc shrinks in place; anything else is no pin)
            blocks.append(pin)
            pin = None
    finally:
        for block in blocks:
            libc.free(block)
    if pin is None:
        return False
    _pins.append(pin)
    _reserved = nbytes
    return True


def release_heap() -> int:
    """Free the pins of :func:`reserve_heap`: glibc may hand the reserve back to the system
    (at its next trim). Returns the bytes that were reserved."""
    global _reserved
    libc = _libc()
    for pin in _pins:
        if libc is not None:
            libc.free(pin)
    _pins.clear()
    released, _reserved = _reserved, 0
    return released


def host_chunk(batch: int, largest_output_bytes: int, device: torch.device,
               limit: int | None = None, kept_bytes: int = 0) -> int:
    """Images per forward pass on the CPU, with the heap kept for them (``batch`` itself
    elsewhere, when tuned, or when one image's output is over the limit already).

    With the default allocator glibc maps a block above its threshold afresh and faults it in
    on every call, always above 32 MiB (EfficientNet-Lite0's 96-channel 112x112 expansion: 4.6
    MiB per image, two 36.75 MiB blocks at batch 8, 18.8k page faults a call), and hands the
    heap's top back when more than twice the threshold lies free. After :func:`settle_heap`
    (done here), chunks whose largest output is at most ``limit`` (``HOST_CHUNK_BYTES``) come
    from the heap, and :func:`reserve_heap` (done here) keeps ``RESERVE_OUTPUTS`` such outputs
    of free heap for them: ResNet-50 at batch 8 runs whole and EfficientNet-Lite0 as 4 + 4, and
    neither faults after the first call. ``kept_bytes``: what a pass keeps of each image until
    it ends (the layer outputs a scan records: 27 MiB of EfficientNet-Lite0's 49 convolutions),
    reserved on top. Chunks give the same numbers per image.
    """
    if device.type != "cpu" or largest_output_bytes <= 0 or _tuned or not _glibc():
        return batch  # (a tuned allocator maps nothing: no need to cut the batch)
    settle_heap()
    per_image = RESERVE_OUTPUTS * largest_output_bytes + max(0, kept_bytes)
    fits = min((HOST_CHUNK_BYTES if limit is None else limit) // largest_output_bytes,
               RESERVE_MAX // per_image)
    if fits < 1:
        return batch
    # even chunks: 8 images that fit 6 at a time go as 4 + 4
    size = batch if fits >= batch else -(-batch // -(-batch // fits))
    reserve_heap(size * per_image)
    return size


def _glibc() -> bool:
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


#: Probe settings: networks with fewer parameters are not probed (no extra forward pass: the
#: format hardly matters there); images per timed batch; timed runs per format; the gain that
#: switches formats; the forward time below which the second format is not tried.
PROBE_MIN_PARAMETERS = 1_000_000
PROBE_BATCH = 4
PROBE_ROUNDS = 2
PROBE_GAIN = 1.05
PROBE_MIN_SECONDS = 2e-3


def _hooked(network: torch.nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in network.modules())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_time(network: torch.nn.Module, x: torch.Tensor, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        _sync(x.device)
        start = time.perf_counter()
        network(x)
        _sync(x.device)
        best = min(best, time.perf_counter() - start)
    return best


def prefers_channels_last(network: torch.nn.Module, example: torch.Tensor) -> bool | None:
    """Whether ``network`` runs faster in the channels-last memory format, measured.

    ``example`` is one NCHW network input (its first image is used). Times no-grad forwards of
    :data:`PROBE_BATCH` images in both formats (a warm-up, then the best of
    :data:`PROBE_ROUNDS`), and keeps channels-last only when it is :data:`PROBE_GAIN` times
    faster and gives the same output (``allclose``); the network is left in the chosen format
    (weights converted in place). None, leaving the network as it was: not measurable now (a
    hook is registered, whose state the extra forward passes would disturb), so ask again later.
    Networks without 4-D weights or under :data:`PROBE_MIN_PARAMETERS` parameters stay
    contiguous without a forward pass; ones faster than :data:`PROBE_MIN_SECONDS` a batch,
    without a second format tried.
    """
    weights = list(network.parameters())
    if (example.ndim != 4 or not any(p.ndim == 4 for p in weights)
            or sum(p.numel() for p in weights) < PROBE_MIN_PARAMETERS):
        return False
    if _hooked(network):
        return None
    try:
        return _probe(network, example[:1].expand(PROBE_BATCH, *example.shape[1:]))
    except Exception:  # the real forward pass will report it
        network.to(memory_format=torch.contiguous_format)
        return False


def _probe(network: torch.nn.Module, x: torch.Tensor) -> bool:
    # not inference mode: weights converted there would be unusable for gradients later
    with torch.inference_mode(False), torch.no_grad():
        network.to(memory_format=torch.contiguous_format)
        dense = x.contiguous()
        expected = network(dense)
        plain = _best_time(network, dense, PROBE_ROUNDS)
        if plain < PROBE_MIN_SECONDS:
            return False
        network.to(memory_format=torch.channels_last)
        last = x.contiguous(memory_format=torch.channels_last)
        found = network(last)
        faster = _best_time(network, last, PROBE_ROUNDS) * PROBE_GAIN <= plain
        same = isinstance(expected, torch.Tensor) and isinstance(found, torch.Tensor) and (
            torch.allclose(found, expected, rtol=1e-3, atol=1e-4))
        if faster and same:
            return True
        network.to(memory_format=torch.contiguous_format)
        return False
