"""Activation capture vs a plain forward pass, and our grids vs the seed's per-channel loop.

Targets (issue 2): capture of all conv + pooling layers ≤ 1.10x a plain forward pass; building
all grids ≥ 5x faster than the seed's loop on the same activations.
"""

from __future__ import annotations

import torch

import convlens as cl
from convlens.activations import book_activation_grid

from .models import resnet50
from .timing import median_times, print_table, setting


def _case(name: str, model: cl.Model, image) -> tuple[tuple[str, ...], tuple[str, ...]]:
    inputs = model.inputs(image)

    def plain() -> None:
        with torch.no_grad():
            model.network(inputs)

    def capture() -> None:
        model.activations(image)

    acts = model.activations(image)

    def grids() -> None:
        for a in acts.values():
            cl.activation_grid(a)

    def seed_loop() -> None:
        for a in acts.values():
            book_activation_grid(a)

    t = median_times(
        {"plain": plain, "capture": capture, "grids": grids, "seed": seed_loop}, repeats=15
    )
    capture_row = (
        name, f"{len(acts)}", f"{t['plain'] * 1e3:.1f}", f"{t['capture'] * 1e3:.1f}",
        f"{t['capture'] / t['plain']:.3f}x", "<= 1.10x",
    )
    grid_row = (
        name, f"{len(acts)}", f"{t['seed'] * 1e3:.1f}", f"{t['grids'] * 1e3:.1f}",
        f"{t['seed'] / t['grids']:.1f}x faster", ">= 5x",
    )
    return capture_row, grid_row


def main() -> None:
    print(setting())
    image = cl.load_image("chelsea", size=(224, 224), interpolation="bilinear")
    cases = [
        ("efficientnet_lite0", cl.load_model()),
        ("resnet50 (random)", cl.load_model(resnet50(), input_size=(224, 224))),
    ]
    rows = [_case(name, model, image) for name, model in cases]
    print("batch 1, 224x224")
    print_table(
        "activation capture (all conv + pool layers) vs plain no-grad forward",
        [r[0] for r in rows],
        ("model", "layers", "forward ms", "capture ms", "ratio", "target"),
    )
    print_table(
        "all channel grids: seed's per-channel loop vs activation_grid",
        [r[1] for r in rows],
        ("model", "layers", "seed loop ms", "ours ms", "speed-up", "target"),
    )


if __name__ == "__main__":
    main()
