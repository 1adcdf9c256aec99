"""``evaluate`` on 32 images, 8 methods, 3 layers: wall time / the network passes it needs.

Every call of the network during the sweep is counted by a hook on the root module: its batch
size, image size (the mosaics are twice the images' size) and whether autograd runs through it
(a gradient pass). Then a plain forward (no autograd) or a forward + backward to the input (no
weight gradients) is timed for each (batch, size) seen; the floor is the sum over the counted
calls. Ablation-CAM's calls run the prefix once and the batch grows at the layer: each such
call counts as one whole forward plus, for every copy past the first, one copy's pass from the
layer on (timed apart at that layer). ROAD's imputation (a linear solve per
image, fraction and order: ``protocols.road_impute_batch``) is not a network pass: its time is
shown apart. Wall and CPU seconds (``time.process_time``, all threads) are both measured: on a
shared machine the CPU ratio is the steadier one.

The 4 bundled photos, each in 8 crops and flips, at 128 x 128 (EfficientNet-Lite0 is fully
convolutional), keep the run short on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import Counter

import numpy as np
import torch

import convlens as cl
from benchmarks.timing import print_table, setting, timed
from convlens.cam.methods.ablationcam import AblationCAM
from convlens.evaluate import protocols, sweep

SIZE = 128
LAYERS = ["_blocks.15", "_bn1", "_swish#2"]


def images(count: int = 32, size: int = SIZE) -> np.ndarray:
    """``count`` images: crops / flips of each bundled photo, at size x size."""
    out = []
    margin = size // 4
    for name in cl.SAMPLES:
        photo = cl.load_image(name, size=(size + margin, size + margin), interpolation="bilinear")
        for k in range(count // len(cl.SAMPLES)):
            y, x = (k % 3) * (margin // 2), (k // 3 % 3) * (margin // 2)
            crop = photo[y : y + size, x : x + size]
            out.append(crop[:, ::-1] if k % 2 else crop)
    return np.ascontiguousarray(np.stack(out), dtype=np.float32)


def both_medians(call, repeats: int = 3) -> tuple[float, float]:
    """Median wall and CPU seconds (all threads) of ``call``."""
    walls, cpus = [], []
    for _ in range(repeats):
        cpu = time.process_time()
        walls.append(timed(call))
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--size", type=int, default=SIZE)
    args = parser.parse_args([] if argv is None else argv)
    print(setting())
    model = cl.load_model()
    x = images(args.images, args.size)
    calls: list[tuple[int, int, bool, tuple[int, int]]] = []

    def count(module, args, output) -> None:
        size = tuple(args[0].shape[-2:])  # (H, W): the mosaics are twice the images' size
        calls.append((args[0].shape[0], output.shape[0], output.requires_grad, size))

    copies: list[tuple[str, tuple[int, int], int]] = []  # Ablation-CAM: layer, size, copies
    fast = AblationCAM._fast

    def counted_fast(self, ctx, info, image, channels):
        logits = fast(self, ctx, info, image, channels)
        if logits is not None:
            copies.append((info.name, tuple(ctx.pixels.shape[1:3]), len(channels)))
        return logits

    imputation = [0.0, 0.0, 0]  # wall s, CPU s, images
    impute = protocols.road_impute_batch

    def timed_impute(images, *args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return impute(images, *args, **kwargs)
        finally:
            imputation[0] += time.perf_counter() - start
            imputation[1] += time.process_time() - cpu
            imputation[2] += images.shape[0]

    protocols.road_impute_batch = timed_impute
    AblationCAM._fast = counted_fast
    handle = model.network.register_forward_hook(count)
    try:
        start, cpu = time.perf_counter(), time.process_time()
        ev = sweep.evaluate(model, list(x), methods="all", layers=LAYERS, steps=10,
                            road_fractions=(0.25, 0.5, 0.75), min_confidence=0.0,
                            bootstrap=200, progress=False)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        handle.remove()
        protocols.road_impute_batch = impute
        AblationCAM._fast = fast

    plain = Counter(calls)
    needed = {(b_in, grad, size) for b_in, _, grad, size in plain}
    timings: dict[tuple[int, bool, tuple[int, int]], tuple[float, float]] = {}
    probe = torch.from_numpy(x[:1]).to(model.device)
    for b_in, grad, size in sorted(needed):
        pixels = torch.nn.functional.interpolate(
            probe.permute(0, 3, 1, 2), size=size, mode="bilinear").permute(0, 2, 3, 1)
        batch = model.prepare(pixels.expand(b_in, -1, -1, -1).contiguous())

        def fwd(batch=batch) -> None:
            with torch.no_grad():
                model.network(batch)

        def fwd_bwd(batch=batch) -> None:
            leaf = batch.detach().requires_grad_()
            out = model.network(leaf)
            torch.autograd.grad(out[:, 0].sum(), leaf)

        call = fwd_bwd if grad else fwd
        call()
        timings[b_in, grad, size] = both_medians(call)
    # Ablation-CAM's copies past the first run from their layer on: each costs one copy's pass
    # through the rest of the network, timed as (33 copies - 1 copy) / 32 at that layer.
    per_copy: dict[tuple[str, tuple[int, int]], tuple[float, float]] = {}
    for name, size in sorted({(name, size) for name, size, _ in copies}):
        pixels = torch.nn.functional.interpolate(
            probe.permute(0, 3, 1, 2), size=size, mode="bilinear").permute(0, 2, 3, 1)
        one, layer = model.prepare(pixels), model.layer(name)
        spent = {}
        for k in (1, 33):
            def suffix(k=k, info=layer, one=one) -> None:
                def grow(out: torch.Tensor) -> torch.Tensor:
                    return out.expand(k, *out.shape[1:]).clone()

                with torch.no_grad(), model.replace_output(info, grow):
                    model.network(one)

            suffix()
            spent[k] = both_medians(suffix)
        per_copy[name, size] = tuple(max(0.0, (spent[33][i] - spent[1][i]) / 32) for i in (0, 1))
    passes = [sum(n * timings[b_in, grad, size][i]
                  for (b_in, _, grad, size), n in plain.items()) for i in (0, 1)]
    extra = [sum(count * per_copy[name, size][i] for name, size, count in copies)
             for i in (0, 1)]
    floor, floor_cpu = passes[0] + extra[0], passes[1] + extra[1]
    images_forward = sum(n * b_out for (_, b_out, grad, _), n in plain.items() if not grad)
    images_backward = sum(n * b_out for (_, b_out, grad, _), n in plain.items() if grad)
    rows = len(ev.table)
    print_table(
        f"evaluate: {len(x)} images ({args.size} px), 8 methods x {len(LAYERS)} layers + "
        f"3 baselines = {rows} rows, {ev.settings['mosaics']} mosaics",
        [
            ("network calls", f"{len(calls)} ({images_forward} images forward, "
             f"{images_backward} forward+backward)", ""),
            ("floor: the passes, timed alone", f"{floor:.1f} s", f"CPU {floor_cpu:.1f} s"),
            ("  of which Ablation-CAM's copies past the layer",
             f"{extra[0]:.1f} s", f"CPU {extra[1]:.1f} s, "
             f"{sum(c for _, _, c in copies)} copies"),
            ("ROAD imputation (torch, batched)", f"{imputation[0]:.1f} s",
             f"CPU {imputation[1]:.1f} s, {imputation[2]} images, "
             f"{1000 * imputation[1] / max(1, imputation[2]):.1f} ms CPU each"),
            ("wall time of evaluate", f"{wall:.1f} s", f"CPU {cpu:.1f} s"),
            ("wall / floor", f"{wall / floor:.2f}x", f"CPU {cpu / floor_cpu:.2f}x; target <= 1.2x"),
            ("(wall - imputation) / floor", f"{(wall - imputation[0]) / floor:.2f}x",
             f"CPU {(cpu - imputation[1]) / floor_cpu:.2f}x"),
            ("imputation share of the wall time", f"{imputation[0] / wall:.0%}",
             f"CPU {imputation[1] / cpu:.0%}"),
        ],
        ("what", "value", ""),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
