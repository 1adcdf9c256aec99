"""Filter visualization speed: time per step against the floor, and batching.

The floor is a forward + backward pass of the same batch through the network up to the target
layer only, written plainly (no hooks, no objective objects, no optimizer). The engine's step time
is read from its progress callback (one tick per step), so set-up and the final pass are left out.
Floor and engine steps alternate one for one (a floor step runs inside each progress tick), and
the ratio is the median of the pairs' ratios, so a busy machine weighs on both alike.

    python benchmarks/bench_filters.py            # default: 16 channels, CPU or the first GPU
    python benchmarks/bench_filters.py 16 64 1    # channels, batch comparison, CPU threads
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

import convlens as cl
from convlens.filters import visualize_filters

from .timing import setting, timed

LAYER = "_blocks.8._bn0"
BOUNDS = {"chollet": 1.2, "lucid": 1.5}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _upto_block8_bn0(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite0 from its input to ``_blocks.8._bn0``, by hand."""
    x = net._swish(net._bn0(net._conv_stem(x)))
    for block in net._blocks[:8]:
        x = block(x)
    block = net._blocks[8]
    return block._bn0(block._expand_conv(x))


def floor_step(forward: Callable[[torch.Tensor], torch.Tensor], batch: int, size: int,
               device: torch.device) -> Callable[[], None]:
    """One forward + backward (w.r.t. the input) of a batch, up to the layer, written plainly."""
    x = torch.rand(batch, 3, size, size, device=device, requires_grad=True)
    rows = torch.arange(batch, device=device)

    def step() -> None:
        with torch.enable_grad():
            out = forward(x)
            score = out[rows, rows].mean(dim=(1, 2))  # image i: channel i
            torch.autograd.grad(score.sum(), [x])

    return step


def paired_step_times(model: cl.Model, layer: str, channels: list[int], recipe: str, steps: int,
                      size: int, floor: Callable[[], None]) -> tuple[list[float], list[float]]:
    """Engine step times and floor step times, run alternately (one floor step per engine tick).

    Pairs see the same load, so their ratios stay meaningful on a busy machine. The first engine
    step (with the set-up) is left out.
    """
    device = model.device
    engine: list[float] = []
    floors: list[float] = []
    last: list[float] = []

    def tick(n: int = 1) -> None:
        _sync(device)
        if last:
            engine.append(time.perf_counter() - last[-1])
        start = time.perf_counter()
        floor()
        _sync(device)
        floors.append(time.perf_counter() - start)
        last.append(time.perf_counter())

    visualize_filters(model, layer, channels=channels, recipe=recipe, steps=steps, size=size,
                      batch_size=len(channels), progress=tick)
    return engine, floors[:-1]


class SmallResNet(nn.Module):
    """A ResNet-style net: stem, three stages of two basic blocks (32, 64, 128 channels)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)

        def block(cin: int, cout: int, stride: int) -> nn.Module:
            return _Basic(cin, cout, stride)

        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU(inplace=True))
        self.layer1 = nn.Sequential(block(32, 32, 1), block(32, 32, 1))
        self.layer2 = nn.Sequential(block(32, 64, 2), block(64, 64, 1))
        self.layer3 = nn.Sequential(block(64, 128, 2), block(128, 128, 1))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer3(self.layer2(self.layer1(self.stem(x)))))


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.down(x))


def main(channels: int = 16, batch_channels: int = 64, threads: int | None = None) -> None:
    """Print the step-time table and the batching table (``threads``: torch CPU threads)."""
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"filter visualization on {device}; {setting()}")
    model = cl.load_model()
    model.network.to(device)
    net = model.network
    picked = list(range(channels))
    rows = []

    for recipe, size, net_size in (("chollet", 200, 200), ("lucid", 128, 224)):
        floor = floor_step(lambda x: _upto_block8_bn0(net, x), channels, net_size, device)
        engine, floors = paired_step_times(model, LAYER, picked, recipe, 12, size, floor)
        ratio = statistics.median(e / f for e, f in zip(engine, floors))
        rows.append((f"{recipe} step, {channels} ch, {net_size} px", statistics.median(engine),
                     statistics.median(floors), ratio, BOUNDS[recipe]))

    print(f"\n{'measure (layer ' + LAYER + ')':<44}{'time':>10}{'floor':>10}{'ratio':>8}"
          f"{'bound':>8}")
    for name, step, base, ratio, bound in rows:
        flag = "ok" if ratio <= bound else "MISS"
        print(f"{name:<44}{step * 1e3:>8.1f}ms{base * 1e3:>8.1f}ms{ratio:>8.2f}{bound:>6.1f}",
              flag)
    print("(medians of 11 alternated steps; ratio: median of the per-pair ratios)")

    print(f"\n{batch_channels} channels batched vs {batch_channels} single runs (chollet)")
    print(f"{'model':<52}{'batched':>10}{'singles':>10}{'gain':>8}")
    small = cl.load_model(SmallResNet().eval(), input_size=(64, 64), preprocess="unit")
    small.network.to(device)
    cases = ((small, "layer3.0.conv2", 64, 5, "small ResNet, layer3.0.conv2, 64 px"),
             (model, LAYER, 128, 3, f"EfficientNet-Lite0, {LAYER}, 128 px"))
    for m, layer, size, steps, name in cases:
        chans = list(range(batch_channels))
        visualize_filters(m, layer, channels=[0], size=size, steps=1)  # warm-up, photo cache
        batched = timed(lambda m=m, layer=layer, size=size, steps=steps, chans=chans:
                             visualize_filters(m, layer, channels=chans, size=size,
                                               steps=steps), device)
        singles = timed(lambda m=m, layer=layer, size=size, steps=steps, chans=chans: [
            visualize_filters(m, layer, channels=[c], size=size, steps=steps) for c in chans
        ], device)
        print(f"{name + f', {steps} steps':<52}{batched:>9.2f}s{singles:>9.2f}s"
              f"{singles / batched:>7.2f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:4]))
