"""Issue 10's clever parts, each measured on and off in one run (keep where the gain is >= 5 %).

- sparse one-hot backward through a linear head (``_linear_head`` / ``one_hot_gradient``):
  Grad-CAM with it vs with the dense ``score.sum()`` backward, batch 1 and 8;
- cached separable upsampling matrices (``upsample``) vs ``F.interpolate``: the whole Grad-CAM
  call, batch 1 and 8, and the upsampling alone (8 maps to 224x224);
- glibc malloc tuning (``runtime.tune_allocator``, process-wide): Grad-CAM in a worker process
  with it vs one without (bench_peers' workers, driven in turn), batch 1, 8 and 32;
- the batch autotuner (``BatchSizer``) vs fixed batch sizes: Score-CAM on one image, top 128
  channels (8, 32, and the memory-bound ``max_batch``, at most 128).

Gain = median over interleaved rounds of (off / on) - 1: positive when the part pays. Models:
ResNet-50 (random weights) and the default model, as bench_cam. Run:
``python -m benchmarks.bench_clever`` (or ``make bench``).
"""

from __future__ import annotations

import contextlib
import importlib
import statistics
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

import convlens as cl

from .bench_cam import _images, resnet50_model
from .bench_peers import Worker
from .timing import interleaved_times, setting

KEEP = 0.05  # the gain a part must show to stay
TOP_K = 128  # Score-CAM channels per call (the tuner explores a quarter of them)
#: where the parts live (the core is being reorganised: patch them wherever they are)
MODULES = ("convlens.gradients", "convlens.cam.maps", "convlens.cam.core",
           "convlens.cam.methods.scorecam")


@contextlib.contextmanager
def patched(name: str, value: object) -> Iterator[None]:
    """``name`` replaced by ``value`` in every module of MODULES that has it."""
    saved = []
    for module_name in MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        if hasattr(module, name):
            saved.append((module, getattr(module, name)))
            setattr(module, name, value)
    if not saved:
        raise RuntimeError(f"{name} not found in {', '.join(MODULES)}")
    try:
        yield
    finally:
        for module, original in saved:
            setattr(module, name, original)


def interpolate(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The plain alternative to the cached matrices."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def add(rows: list[tuple[str, str, str, float]], row: tuple[str, str, str, float]) -> None:
    rows.append(row)
    model, part, what, gain = row
    print(f"{model:<20}{part:<37}{what:<40}{gain:>+7.1%}", flush=True)


def paired_gain(on: Callable[[], object], off: Callable[[], object], rounds: int) -> float:
    times = interleaved_times({"on": on, "off": off}, rounds, warmup=1)
    return statistics.median(f / n for n, f in zip(times["on"], times["off"])) - 1


def switched(name: str, value: object, call: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with patched(name, value):
            return call()
    return run


def gradient_parts(model: cl.Model, rows: list[tuple[str, str, str, float]]) -> None:
    from convlens.cam.maps import upsample

    for batch in (1, 8):
        pixels = torch.from_numpy(_images(batch))
        call = lambda p=pixels: model.cam(p)  # noqa: E731
        rounds = 15 if batch == 1 else 9
        add(rows, (model.name, "sparse one-hot head backward", f"Grad-CAM b{batch}",
                     paired_gain(call, switched("_linear_head", lambda out: False, call), rounds)))
        add(rows, (model.name, "cached upsampling matrices", f"Grad-CAM b{batch}",
                     paired_gain(call, switched("upsample", interpolate, call), rounds)))
    maps = torch.rand(8, 7, 7)
    add(rows, (model.name, "cached upsampling matrices", "upsample alone, 8 maps",
                 paired_gain(lambda: upsample(maps, (224, 224)),
                             lambda: interpolate(maps, (224, 224)), 51)))


def score_cam_batches(model: cl.Model, rows: list[tuple[str, str, str, float]]) -> None:
    from convlens.batching import max_batch

    image = _images(1)
    limit = max_batch(model, (224, 224))
    tuned = lambda: model.cam(image, method="scorecam", top_k=TOP_K)  # noqa: E731
    fixed = {size: (lambda s=size: model.cam(image, method="scorecam", top_k=TOP_K, batch_size=s))
             for size in sorted({8, 32, min(limit, TOP_K)})}
    times = interleaved_times({"tuned": tuned, **{str(s): f for s, f in fixed.items()}},
                              repeats=2, warmup=0)
    for size in fixed:
        gain = statistics.median(f / t for t, f in zip(times["tuned"], times[str(size)])) - 1
        what = f"fixed {size}" + (" (max_batch)" if size == min(limit, TOP_K) else "")
        add(rows, (model.name, "batch autotuner", f"Score-CAM top {TOP_K} vs {what}", gain))


def malloc_tuning(rows: list[tuple[str, str, str, float]]) -> None:
    workers = [Worker("convlens+malloc"), Worker("convlens")]
    try:
        for model in ("resnet50", "efficientnet_lite0"):
            for batch in (1, 8, 32):
                chosen = workers[0].ask(cmd="setup", model=model, batch=batch)["channels_last"]
                workers[1].ask(cmd="setup", model=model, batch=batch, channels_last=chosen)
                ratios = []
                for round_ in range(7 if batch < 32 else 3):
                    pair = workers if round_ % 2 == 0 else workers[::-1]
                    t = {w.library: w.ask(cmd="time", method="gradcam")["seconds"] for w in pair}
                    ratios.append(t["convlens"] / t["convlens+malloc"])
                add(rows, (model, "glibc malloc tuning (process-wide)", f"Grad-CAM b{batch}",
                             statistics.median(ratios) - 1))
    finally:
        for w in workers:
            w.close()


def main() -> None:
    torch.manual_seed(0)
    print(f"bench_clever: {setting(tune=False)}")
    rows: list[tuple[str, str, str, float]] = []
    print(f"\ngain = time without / time with - 1 (median of paired rounds); keep at >= {KEEP:.0%}")
    print(f"{'model':<20}{'part':<37}{'measured on':<40}{'gain':>7}", flush=True)
    models = [resnet50_model(), cl.load_model()]
    for model in models:
        gradient_parts(model, rows)
    malloc_tuning(rows)
    for model in models:
        score_cam_batches(model, rows)
    kept = sorted({part for _, part, _, gain in rows if gain >= KEEP})
    print(f"parts showing >= {KEEP:.0%} somewhere: {', '.join(kept) or 'none'}")
