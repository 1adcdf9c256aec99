"""Issue 10's clever parts, each measured on and off in one run (keep where the gain is >= 5 %).

Removed after this benchmark (quiet machine, load 0.4, 2026-12-02; gain of a whole Grad-CAM call
on ResNet-50 / EfficientNet-Lite0 at batch 1 and 8):

- sparse one-hot backward through a linear head: +0.9 %, -2.2 % / +1.4 %, -0.9 %;
- cached separable upsampling matrices instead of ``F.interpolate``: +0.7 %, -0.4 % / +0.9 %,
  +1.0 % (the upsampling alone was 3.3x faster, but it is under 1 % of the call).

Kept (same run): glibc malloc tuning, +24 % / +68 % on ResNet-50 at b8 / b32 and +14 % / +36 % /
+110 % on EfficientNet-Lite0 at b1 / b8 / b32 (opt-in: it is process-wide); the batch autotuner,
+89 % / +23 % / +23 % over fixed batches of 8 / 32 / 128 for Score-CAM (top 128, ResNet-50).

Still measured:

- glibc malloc tuning (``runtime.tune_allocator``, process-wide): Grad-CAM in a worker process
  with it vs one without (bench_peers' workers, driven in turn), batch 1, 8 and 32;
- the batch autotuner (``BatchSizer``) vs fixed batch sizes: Score-CAM on one image, top 128
  channels (8, 32, and the memory-bound ``max_batch``, at most 128).

Gain = median over interleaved rounds of (off / on) - 1: positive when the part pays. Models:
ResNet-50 (random weights) and the default model, as bench_cam. Run:
``python -m benchmarks.bench_clever`` (or ``make bench``).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch

import convlens as cl

from .bench_cam import _images, resnet50_model
from .bench_peers import Worker
from .timing import interleaved_times, setting

KEEP = 0.05  # the gain a part must show to stay
TOP_K = 128  # Score-CAM channels per call (the tuner explores a quarter of them)


def add(rows: list[tuple[str, str, str, float]], row: tuple[str, str, str, float]) -> None:
    rows.append(row)
    model, part, what, gain = row
    print(f"{model:<20}{part:<37}{what:<40}{gain:>+7.1%}", flush=True)


def paired_gain(on: Callable[[], object], off: Callable[[], object], rounds: int) -> float:
    times = interleaved_times({"on": on, "off": off}, rounds, warmup=1)
    return statistics.median(f / n for n, f in zip(times["on"], times["off"])) - 1


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
    malloc_tuning(rows)
    for model in models:
        score_cam_batches(model, rows)
    kept = sorted({part for _, part, _, gain in rows if gain >= KEEP})
    print(f"parts showing >= {KEEP:.0%} somewhere: {', '.join(kept) or 'none'}")
