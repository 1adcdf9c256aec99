"""``evaluate`` on 32 images, 8 methods, 3 layers: wall time / the network passes it needs.

Every call of the network during the sweep is counted by a hook on the root module: its batch
size and whether autograd runs through it (a gradient pass). Then a plain forward (no autograd)
and a plain forward + backward to the input (no weight gradients) are timed for each batch size
seen; the floor is the sum over the counted calls. Ablation-CAM's calls whose batch grows inside
the network (the prefix runs once, the copies only from the layer on) are floored at the
prefix's forward alone, so the floor is never too high. ROAD's imputation (a linear solve per
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
    calls: list[tuple[int, int, bool]] = []

    def count(module, args, output) -> None:
        calls.append((args[0].shape[0], output.shape[0], output.requires_grad))

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

    plain = Counter((b_in, b_out, grad) for b_in, b_out, grad in calls)
    sizes = sorted({b for b_in, b_out, _ in plain for b in (b_in, b_out) if b_in == b_out}
                   | {b_in for b_in, b_out, _ in plain if b_in != b_out})
    forward, backward, forward_cpu, backward_cpu = {}, {}, {}, {}
    probe = torch.from_numpy(x[:1]).to(model.device)
    for size in sizes:
        batch = model.prepare(probe.expand(size, -1, -1, -1).contiguous())

        def fwd(batch=batch) -> None:
            with torch.no_grad():
                model.network(batch)

        def fwd_bwd(batch=batch) -> None:
            leaf = batch.detach().requires_grad_()
            out = model.network(leaf)
            torch.autograd.grad(out[:, 0].sum(), leaf)

        fwd(), fwd_bwd()
        forward[size], forward_cpu[size] = both_medians(fwd)
        backward[size], backward_cpu[size] = both_medians(fwd_bwd)
    floor = sum(
        n * (backward[b_in] if grad else forward[b_in])
        for (b_in, b_out, grad), n in plain.items()
    )
    floor_cpu = sum(
        n * (backward_cpu[b_in] if grad else forward_cpu[b_in])
        for (b_in, b_out, grad), n in plain.items()
    )
    images_forward = sum(n * b_out for (b_in, b_out, grad), n in plain.items() if not grad)
    images_backward = sum(n * b_out for (b_in, b_out, grad), n in plain.items() if grad)
    rows = len(ev.table)
    print_table(
        f"evaluate: {len(x)} images ({args.size} px), 8 methods x {len(LAYERS)} layers + "
        f"3 baselines = {rows} rows, {ev.settings['mosaics']} mosaics",
        [
            ("network calls", f"{len(calls)} ({images_forward} images forward, "
             f"{images_backward} forward+backward)", ""),
            ("floor: the passes, timed alone", f"{floor:.1f} s", f"CPU {floor_cpu:.1f} s"),
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
