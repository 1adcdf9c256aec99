"""``evaluate`` on 32 images, 8 methods, 3 layers: wall time / the network passes it needs.

Every call of the network during the sweep is counted by a hook on the root module: its batch
size and whether autograd runs through it (a gradient pass). Then a plain forward (no autograd)
and a plain forward + backward to the input (no weight gradients) are timed for each batch size
seen; the floor is the sum over the counted calls. Ablation-CAM's calls whose batch grows inside
the network (the prefix runs once, the copies only from the layer on) are floored at the
prefix's forward alone, so the floor is never too high. ROAD's imputation (a sparse solve per
image, fraction and order on the CPU) is not a network pass: its time is shown apart.

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

    imputation = [0.0]
    impute = protocols.road_impute

    def timed_impute(*args, **kwargs):
        start = time.perf_counter()
        try:
            return impute(*args, **kwargs)
        finally:
            imputation[0] += time.perf_counter() - start

    protocols.road_impute = timed_impute
    handle = model.network.register_forward_hook(count)
    try:
        start = time.perf_counter()
        ev = sweep.evaluate(model, list(x), methods="all", layers=LAYERS, steps=10,
                            road_fractions=(0.25, 0.5, 0.75), min_confidence=0.0,
                            bootstrap=200, progress=False)
        wall = time.perf_counter() - start
    finally:
        handle.remove()
        protocols.road_impute = impute

    plain = Counter((b_in, b_out, grad) for b_in, b_out, grad in calls)
    sizes = sorted({b for b_in, b_out, _ in plain for b in (b_in, b_out) if b_in == b_out}
                   | {b_in for b_in, b_out, _ in plain if b_in != b_out})
    forward, backward = {}, {}
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
        forward[size] = statistics.median(timed(fwd) for _ in range(3))
        backward[size] = statistics.median(timed(fwd_bwd) for _ in range(3))
    floor = sum(
        n * (backward[b_in] if grad else forward[b_in])
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
            ("floor: the passes, timed alone", f"{floor:.1f} s", ""),
            ("ROAD imputation (scipy sparse solves)", f"{imputation[0]:.1f} s", ""),
            ("wall time of evaluate", f"{wall:.1f} s", ""),
            ("wall / floor", f"{wall / floor:.2f}x", "target <= 1.2x"),
            ("(wall - imputation) / floor", f"{(wall - imputation[0]) / floor:.2f}x", ""),
        ],
        ("what", "value", ""),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
