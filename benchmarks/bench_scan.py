"""convlens scan: the dataset engine against its physical floor, measured in the same run.

- scan (``cam=False``) vs decoding alone + the batched forward pass with capture alone;
- scan with CAMs vs decoding + the forward pass + batched Grad-CAM of the true class;
- peak RSS of a scan of 10,000 images vs 1,000 (small model, 32x32 PNGs, one process each);
- the Ray engine (2 CPUs, local) vs the local engine.

``CONVLENS_BENCH_SCAN_IMAGES`` sets the JPEG count (default 128); ``CONVLENS_BENCH_SCAN_PARTS``
picks parts (``floor,ray,rss``; default all).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import convlens as cl
from convlens.images import load_image
from convlens.scan import scan

from .timing import setting

IMAGES = int(os.environ.get("CONVLENS_BENCH_SCAN_IMAGES", "128"))
PARTS = os.environ.get("CONVLENS_BENCH_SCAN_PARTS", "floor,ray,rss").split(",")
BATCH = 32


def _jpeg_folder(model: cl.Model, root: Path, count: int) -> tuple[list[Path], list[int]]:
    """Random 256x256 crops of the sample photos as JPEG files, labelled with each crop's top-1
    ImageNet class, a wrong one for every tenth (90 % accuracy, as a real validation set)."""
    rng = np.random.default_rng(0)
    photos = [cl.sample_image(name) for name in cl.SAMPLES]
    crops = []
    for i in range(count):
        photo = photos[i % len(photos)]
        y = rng.integers(0, photo.shape[0] - 256)
        x = rng.integers(0, photo.shape[1] - 256)
        crops.append(photo[y:y + 256, x:x + 256].astype(np.uint8))
    predicted = model.probabilities(np.stack(crops).astype(np.float32)).argmax(dim=1).tolist()
    root.mkdir(parents=True)
    paths, labels = [], []
    for i, (crop, label) in enumerate(zip(crops, predicted)):
        path = root / f"{i:05d}.jpg"
        Image.fromarray(crop).save(path, quality=90)
        paths.append(path)
        labels.append((label + 1) % 1000 if i % 10 == 9 else label)
    return paths, labels


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _floor(model: cl.Model, paths: list[Path], labels: list[int]) -> dict[str, float]:
    """Decoding alone; forward + capture alone; batched Grad-CAM alone (on decoded pixels)."""
    size = tuple(model.input_size)
    decoded: list[np.ndarray] = []
    decode = _seconds(lambda: decoded.extend(load_image(p, size=size) for p in paths))
    pixels = model.to_pixels(np.stack(decoded))
    layers = model.resolve("conv")

    def forward() -> None:
        with model.capture(layers) as cap:
            for start in range(0, len(paths), BATCH):
                cap.run(model.prepare(pixels[start:start + BATCH]))

    def gradcam() -> None:
        for start in range(0, len(paths), BATCH):
            model.cam(pixels[start:start + BATCH], target=labels[start:start + BATCH])

    return {"decode": decode, "forward": _seconds(forward), "gradcam": _seconds(gradcam)}


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) forking parent
_RSS_CHILD = """
import re, sys
import convlens as cl
from convlens.scan import scan
from convlens.scan.demo import digits_model
root, out = sys.argv[1], sys.argv[2]
scan(digits_model(), root, out, cam=False, top_k=9)
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)))
"""


def _peak_rss(root: Path, count: int, work: Path) -> float:
    """Peak RSS (MB) of a process that scans the first ``count`` digits PNGs (repeated)."""
    folder = work / f"digits{count}"
    source = sorted(root.rglob("*.png"))
    for i in range(count):
        target = folder / source[i % len(source)].parent.name / f"{i:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(source[i % len(source)], target)
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(folder), str(work / f"scan{count}")],
        capture_output=True, text=True, check=True,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    print(setting())
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = cl.load_model()
    with tempfile.TemporaryDirectory(prefix="convlens-bench-scan-") as tmp:
        work = Path(tmp)
        paths, labels = _jpeg_folder(model, work / "jpeg", IMAGES)
        names = model.class_names or []
        by_path = {str(p): names[label] for p, label in zip(paths, labels)}  # class names
        scan(model, paths[:BATCH], work / "warm", cam=False)  # warm up the model and allocator
        if "floor" in PARTS:
            _versus_floor(model, paths, labels, by_path, work)
        if "ray" in PARTS:
            _versus_ray(model, paths, by_path, work)
        if "rss" in PARTS:
            from convlens.scan.demo import write_digits

            digits = write_digits(work / "digits")
            small = _peak_rss(digits, 1_000, work)
            large = _peak_rss(digits, 10_000, work)
            print(f"  peak RSS, digits convnet: 1,000 images {small:.0f} MB, 10,000 images "
                  f"{large:.0f} MB (+{large - small:.0f} MB)")


def _versus_floor(model: cl.Model, paths: list[Path], labels: list[int],
                  by_path: dict[str, str], work: Path) -> None:
    floor = _floor(model, paths, labels)
    no_cam = _seconds(lambda: scan(model, work / "jpeg", work / "s1", cam=False,
                                   labels=by_path))
    with_cam = _seconds(lambda: scan(model, work / "jpeg", work / "s2", labels=by_path))
    base = floor["decode"] + floor["forward"]
    print(f"{IMAGES} JPEG files, EfficientNet-Lite0, all {len(model.resolve('conv'))} conv "
          f"layers, batch {BATCH}")
    print(f"  decoding alone {floor['decode']:.2f} s, forward + capture alone "
          f"{floor['forward']:.2f} s, batched Grad-CAM alone {floor['gradcam']:.2f} s")
    print(f"  scan --no-cam   {no_cam:.2f} s = {no_cam / base:.2f}x (decode + forward)")
    print(f"  scan with CAMs  {with_cam:.2f} s = {with_cam / base:.2f}x (decode + forward), "
          f"{with_cam / (floor['decode'] + floor['gradcam']):.2f}x (decode + batched Grad-CAM)")



def _versus_ray(model: cl.Model, paths: list[Path], by_path: dict[str, str], work: Path) -> None:
    import ray

    local = _seconds(lambda: scan(model, work / "jpeg", work / "r1", cam=False, labels=by_path))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        on_ray = _seconds(lambda: scan(model, work / "jpeg", work / "r2", cam=False,
                                       labels=by_path, engine="ray"))
    finally:
        ray.shutdown()
    print(f"  ray engine (2 CPUs, actor start included) {on_ray:.2f} s, local {local:.2f} s: "
          f"{local / on_ray:.2f}x the local engine's speed")


if __name__ == "__main__":
    main()
