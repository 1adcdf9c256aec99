"""CAM cost relative to a plain forward pass, on ResNet-50 (random weights) and the default model.

- Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM: time per image of ``model.cam`` (heatmaps,
  raw maps, targets, scores, probabilities as NumPy arrays) / time per image of ``model.logits``
  (a plain no-grad forward pass), at batch 1 and batch 8. Bound: <= 1.10. Also batch 8 vs batch
  1. Boxes are worked out when ``.boxes`` is first read; their cost per image is printed apart.
- The reference algorithm written plainly: Grad-CAM as tutorials write it (a forward hook that
  keeps the layer's output, ``backward()`` through the whole network, weights, ``F.interpolate``,
  division by the max), in the same rounds: how much the no-grad prefix and the rest save.
- Score-CAM: one image, every channel (default model) or Faster Score-CAM's top 256 channels
  (ResNet-50), against channels x the per-image cost of its batched forward passes, measured
  in the same call (and, apart, against the cheapest batch size's cost). Bound: 1.05.
- Memory: RSS before and after 1,000 consecutive Grad-CAM calls on the default model.

Calls are interleaved (one of each per round, the order turning every round) so that a slow
spell on a shared machine hits all of them. Two ratios are printed: the median over rounds of the
paired ratio (call / forward of the same round: drift cancels within a pair, the median drops
outliers), which is checked against the bound, and best call / best forward over the rounds.
Run: ``python -m benchmarks.bench_cam`` (or ``make bench``).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

import convlens as cl
from convlens.cam import GRADIENT_METHODS
from convlens.cam.core import default_layer

from .models import resnet50
from .timing import interleaved_times, setting, timed

BATCHES = (1, 8)
ROUNDS = 25


def resnet50_model() -> cl.Model:
    return cl.load_model(resnet50(), name="resnet50")


def _images(n: int) -> np.ndarray:
    names = list(cl.SAMPLES)
    return cl.load_images(
        [names[i % len(names)] for i in range(n)], size=(224, 224), interpolation="bilinear"
    )


def plain_gradcam(model: cl.Model, images: np.ndarray) -> np.ndarray:
    """Grad-CAM of the top class, written the usual way: full autograd graph, ``backward()``."""
    layer = default_layer(model)
    kept: list[torch.Tensor] = []

    def keep(module: torch.nn.Module, args: object, output: torch.Tensor) -> None:
        output.retain_grad()
        kept.append(output)

    handle = layer.module.register_forward_hook(keep)
    try:
        out = model.network(model.inputs(images))
        out.gather(1, out.argmax(dim=1, keepdim=True)).sum().backward()
    finally:
        handle.remove()
        model.network.zero_grad(set_to_none=True)
    activations = kept[layer.call].detach()
    weights = kept[layer.call].grad.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activations).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[1:3], mode="bilinear", align_corners=False)[:, 0]
    return (cam / cam.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).numpy()


def gradient_methods(model: cl.Model, rounds: int = ROUNDS) -> list[tuple]:
    """Rows (model, method, batch, ms/image, ratio of bests, median ratio, batch-8 gain).

    The plain Grad-CAM runs in rounds of its own with the forward pass: its full backward pass
    churns memory and caches, which would slow whatever came after it in a shared round.
    """
    rows = []
    per_image: dict[tuple[str, int], float] = {}
    for batch in BATCHES:
        pixels = _images(batch)
        calls: dict[str, Callable[[], object]] = {"forward": lambda p=pixels: model.logits(p)}
        for method in GRADIENT_METHODS:
            calls[method] = lambda p=pixels, m=method: model.cam(p, method=m)
        plain = {"forward": calls["forward"],
                 "plain gradcam": lambda p=pixels: plain_gradcam(model, p)}
        for times in (interleaved_times(calls, rounds, warmup=1),
                      interleaved_times(plain, max(3, rounds // 3), warmup=1)):
            base = times["forward"]
            for method, spent in times.items():
                if method == "forward" and rows and rows[-1][2] == batch:
                    continue  # one forward row per batch: the main rounds'
                per_image[(method, batch)] = min(spent) / batch
                ratios = [t / b for t, b in zip(spent, base)]
                rows.append([model.name, method, batch, 1000 * min(spent) / batch,
                             min(spent) / min(base), statistics.median(ratios), None])
    for row in rows:
        if row[2] == BATCHES[-1]:
            row[6] = per_image[(row[1], BATCHES[-1])] / per_image[(row[1], BATCHES[0])]
    return [tuple(row) for row in rows]


def box_cost(model: cl.Model, batch: int = 8, rounds: int = 50) -> float:
    """Seconds per image to work out ``CamResult.boxes`` (on first access) for Grad-CAM maps."""
    cams = model.cam(_images(batch))
    costs = []
    for _ in range(rounds):
        cams.__dict__.pop("boxes", None)  # forget the cached boxes
        costs.append(timed(lambda: cams.boxes))
    return min(costs) / batch


def best_forward(
    model: cl.Model, sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32), rounds: int = 3
) -> tuple[int, float]:
    """The batch size with the cheapest forward pass per image, and that cost (s)."""
    pixels = _images(max(sizes))
    costs = {}
    for size in sizes:
        x = model.prepare(model.to_pixels(pixels[:size]))
        with torch.no_grad():
            model.forward(x)
            costs[size] = min(
                timed(lambda x=x: model.forward(x)) for _ in range(rounds)
            ) / size
    best = min(costs, key=costs.__getitem__)
    return best, costs[best]


def score_cam(model: cl.Model, top_k: int | None, rounds: int = 3) -> tuple:
    """Score-CAM on one image against ``channels`` x the per-image forward cost.

    Returns (model, channels, batch, ms/forward image, seconds, ratio, ratio to the best).

    - ratio: the call's time / (channels x the per-image cost of the forward passes it ran at
      the batch size it settled on), both measured in the same call, so that a slow spell of a
      shared machine hits both sides. It counts the tuning, the masking and the Python work.
    - ratio to the best: the call's time / (channels x the cheapest per-image forward over
      batch sizes 1-32, measured apart, alternating with the calls): whether the tuning found
      a good size (noisier: the two sides run seconds apart).

    Both are the median over ``rounds`` calls.
    """
    image = _images(1)
    layer = [info for info in model.layers(include_blocks=True) if info.spatial][-1]
    count = layer.channels if top_k is None else min(top_k, layer.channels)
    size, _ = best_forward(model)
    batch = model.inputs(_images(size))
    batches = math.ceil(count / size)
    forward = model.forward
    passes: list[tuple[int, float]] = []

    def timed_forward(x: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        try:
            return forward(x)
        finally:
            passes.append((x.shape[0], time.perf_counter() - start))

    model.cam(image, method="scorecam", top_k=8)  # warm-up
    spent, in_call, best = [], [], []
    for _ in range(rounds):
        passes.clear()
        model.forward = timed_forward  # type: ignore[method-assign]
        try:
            spent.append(timed(lambda: model.cam(image, method="scorecam", top_k=top_k)))
        finally:
            del model.forward
        used = statistics.mode(n for n, _ in passes)
        in_call.append(statistics.median(t / n for n, t in passes if n == used))
        with torch.no_grad():
            best.append(timed(lambda: [model.forward(batch) for _ in range(batches)])
                        / (batches * size))
    seconds = statistics.median(spent)
    return (model.name, count, used, 1000 * statistics.median(in_call), seconds,
            statistics.median(s / (count * c) for s, c in zip(spent, in_call)),
            statistics.median(s / (count * b) for s, b in zip(spent, best)))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def memory(model: cl.Model, calls: int = 1000) -> tuple[float, float]:
    """RSS (MiB) after 20 warm-up calls and after ``calls`` more Grad-CAM calls."""
    image = _images(1)
    for _ in range(20):
        model.cam(image)
    gc.collect()
    before = _rss()
    for _ in range(calls):
        model.cam(image)
    gc.collect()
    return before / 2**20, _rss() / 2**20


def main() -> None:
    torch.manual_seed(0)
    print(f"bench_cam: {setting()}")
    models = [resnet50_model(), cl.load_model()]
    print("\nGradient methods: time per image / plain no-grad forward per image (bound 1.10)")
    header = (f"{'model':<20}{'method':<20}{'batch':>6}{'ms/img':>10}{'bests':>8}"
              f"{'median':>8}{'b8/b1':>8}")
    print(header)
    verdicts = []
    for model in models:
        rows = gradient_methods(model)
        for name, method, batch, ms, ratio, median, gain in rows:
            gain_text = "" if gain is None else f"{gain:.2f}"
            print(f"{name:<20}{method:<20}{batch:>6}{ms:>10.1f}{ratio:>8.3f}{median:>8.3f}"
                  f"{gain_text:>8}")
        ours = [r for r in rows if r[1] not in ("forward", "plain gradcam")]
        worst = max(r[5] for r in ours)
        gains = [r[6] for r in ours if r[6] is not None]
        plain = {r[2]: r[3] for r in rows if r[1] == "plain gradcam"}
        speedup = ", ".join(
            f"batch {r[2]} {plain[r[2]] / r[3]:.2f}x" for r in ours if r[1] == "gradcam"
        )
        verdicts.append(
            f"{model.name}: worst median ratio {worst:.3f} "
            f"({'ok' if worst <= 1.10 else 'MISSED'}); "
            f"batch 8 per image / batch 1: {min(gains):.2f}-{max(gains):.2f} "
            f"({'cheaper' if max(gains) < 1 else 'NOT cheaper'}); "
            f"Grad-CAM vs the plain one: {speedup} faster"
        )
    print("\n".join(verdicts))
    for model in models:
        print(f"{model.name}: boxes on first access of .boxes: "
              f"{1000 * box_cost(model):.2f} ms/image")
    print("\nScore-CAM, one image: time / (channels x per-image forward at its batch size) "
          "(bound 1.05)")
    print(f"{'model':<20}{'channels':>9}{'batch':>7}{'ms/fwd':>9}{'seconds':>9}{'ratio':>8}"
          f"{'vs best':>9}")
    for model, top_k in ((models[1], None), (models[0], 256)):
        name, count, size, ms, seconds, ratio, to_best = score_cam(model, top_k)
        verdict = "ok" if ratio <= 1.05 else "MISSED"
        print(f"{name:<20}{count:>9}{size:>7}{ms:>9.1f}{seconds:>9.2f}{ratio:>8.3f}"
              f"{to_best:>9.3f}  {verdict}")
    before, after = memory(models[1])
    print(f"\nMemory: 1,000 Grad-CAM calls on {models[1].name}: RSS {before:.0f} MiB -> "
          f"{after:.0f} MiB ({after - before:+.1f} MiB)")


if __name__ == "__main__":
    main()
