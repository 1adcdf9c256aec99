"""The report and the explorer: what their design choices buy.

- Report pictures: activation grids as palette PNGs vs RGB PNGs of the same colours (size, time).
- Report activations: one forward pass per image for every layer vs one pass per layer.
- Explorer: a cached grid request vs a first one; a light request while the model is busy vs
  idle (the event loop must not wait for the model: milliseconds, not the model's seconds).
"""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
from PIL import Image

import convlens as cl
from convlens.render import colorize, grid_png
from convlens.web import BackgroundServer

from .timing import median_times, print_table, setting


def _rgb_png(gray: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(colorize(gray)).save(buf, format="PNG")
    return buf.getvalue()


def _pictures(model: cl.Model) -> tuple[str, ...]:
    acts = model.activations("chelsea")
    grids = [cl.activation_grid(a[0]) for a in acts.values()]
    palette = sum(len(grid_png(g)) for g in grids)
    rgb = sum(len(_rgb_png(g)) for g in grids)
    t = median_times({"palette": lambda: [grid_png(g) for g in grids],
                      "rgb": lambda: [_rgb_png(g) for g in grids]}, repeats=3, warmup=1)
    return ("grid PNGs, chelsea, 49 layers", f"{rgb / 2**20:.1f} MB RGB",
            f"{palette / 2**20:.1f} MB palette", f"{rgb / palette:.2f}x smaller",
            f"{t['rgb'] / t['palette']:.2f}x faster")


def _passes(model: cl.Model) -> tuple[str, ...]:
    names = [info.name for info in model.resolve(None)][::4]  # 13 layers, shallow to deep
    pixels = model.to_pixels(["chelsea"])
    t = median_times({
        "one pass": lambda: model.activations(pixels, layers=names),
        "per layer": lambda: [model.activations(pixels, layers=[n]) for n in names],
    }, repeats=3, warmup=1)
    return (f"activations, {len(names)} layers, 1 image",
            f"{t['per layer'] * 1e3:.0f} ms pass per layer",
            f"{t['one pass'] * 1e3:.0f} ms one pass", f"{t['per layer'] / t['one pass']:.1f}x",
            "")


def _latency(client: httpx.Client, path: str, repeats: int = 9) -> float:
    """Median time of a request, sent every 0.1 s."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        client.get(path)
        times.append(time.perf_counter() - start)
        time.sleep(0.1)
    return float(np.median(times))


def _explorer(model: cl.Model) -> list[tuple[str, ...]]:
    rows = []
    with BackgroundServer(model) as server, httpx.Client(base_url=server.url, timeout=120) as c:
        image_id = c.post("/api/images/sample/chelsea").json()["id"]
        layer = "_blocks.1._expand_conv"
        start = time.perf_counter()
        c.get(f"/api/images/{image_id}/activations/{layer}.png")
        first = time.perf_counter() - start
        cached = median_times(
            {"grid": lambda: c.get(f"/api/images/{image_id}/activations/{layer}.png")},
            repeats=7, warmup=1)["grid"]
        rows.append(("explorer grid request", f"{first * 1e3:.0f} ms first",
                     f"{cached * 1e3:.1f} ms cached", f"{first / cached:.0f}x", ""))
        idle = _latency(c, "/api/samples")
        stop = threading.Event()

        def keep_busy() -> None:
            with httpx.Client(base_url=server.url, timeout=300) as other:
                while not stop.is_set():
                    other.get(f"/api/images/{image_id}/cam", params={"method": "scorecam"})

        worker = threading.Thread(target=keep_busy)
        worker.start()
        time.sleep(0.5)
        busy = _latency(c, "/api/samples")
        stop.set()
        worker.join()
        rows.append(("light request, model busy (Score-CAM)", f"{idle * 1e3:.1f} ms idle",
                     f"{busy * 1e3:.1f} ms busy", f"{busy / idle:.1f}x",
                     "ms, not the model's seconds"))
    return rows


def main() -> None:
    print(setting())
    model = cl.load_model()
    rows = [_pictures(model), _passes(model), *_explorer(model)]
    print_table("report and explorer (efficientnet_lite0, 224x224)", rows,
                ("case", "baseline", "ours", "ratio", "note"))
