"""convlens scan against its physical floor, measured in the same run: the issue's ratios.

1. scan --no-cam / (decoding alone + batched forward with capture alone)       bound <= 1.10
2. scan with CAMs / (decoding alone + batched Grad-CAM alone)                  bound <= 1.10
   on a GPU also: scan / max(decoding alone, forward alone) (decoding hidden)  bound <= 1.10
3. peak RSS of a scan of 10,000 images - peak RSS for 1,000 (one process each) bound <= 150 MB
4. Ray engine speed / local engine speed (2 CPUs, local Ray, actor start in)   bound >= 0.7
   (on 1,024 files by default: the actors' start, a few seconds, is paid once per scan)

JPEG files (random 256 px crops of the sample photos) on EfficientNet-Lite0 (channels-last maps)
and on a ResNet-50 (random weights, NCHW maps: the layout and the branches of most PyTorch
models), all conv layers, batch 32; each round runs every measurement once, the order turning,
and a ratio is the median of the rounds' ratios. ``--quick`` is a smoke run (few images, one
round, 1,000 vs 2,000 for RSS): its figures are not the bounds'. Run the full one on a quiet
machine:

    python -m benchmarks.bench_scan            (or: python benchmarks/run.py bench_scan)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

import convlens as cl
from convlens.scan import scan
from convlens.scan.engine import decoded
from convlens.scan.sources import open_source

from .timing import setting

BATCH = 32
WORKERS = 4  # the scan's decoding threads (its default)


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
    predicted = []
    for start in range(0, count, BATCH):
        chunk = np.stack(crops[start:start + BATCH]).astype(np.float32)
        predicted += model.probabilities(chunk).argmax(dim=1).tolist()
    root.mkdir(parents=True)
    paths, labels = [], []
    for i, (crop, label) in enumerate(zip(crops, predicted)):
        path = root / f"{i:05d}.jpg"
        Image.fromarray(crop).save(path, quality=90)
        paths.append(path)
        labels.append((label + 1) % 1000 if i % 10 == 9 else label)
    return paths, labels


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _rounds(calls: dict[str, Callable[[], object]], rounds: int) -> list[dict[str, float]]:
    """Each call once per round, the order turning by one each round; the rounds' times."""
    names = list(calls)
    out = []
    for r in range(rounds):
        shift = r % len(names)
        out.append({name: _seconds(calls[name]) for name in names[shift:] + names[:shift]})
    return out


def _median(rounds: list[dict[str, float]], ratio: Callable[[dict[str, float]], float]) -> str:
    values = [ratio(t) for t in rounds]
    spread = f" (rounds {min(values):.2f}..{max(values):.2f})" if len(values) > 1 else ""
    return f"{statistics.median(values):.2f}x{spread}"


class _Scans:
    """Scans of ``source`` (a list of files) into fresh folders under ``work`` (each removed
    once done)."""

    def __init__(self, model: cl.Model, source: list[str], labels: dict[str, str], work: Path):
        self.model, self.source, self.labels, self.work = model, source, labels, work
        self.count = 0

    def __call__(self, **options: object) -> None:
        self.count += 1
        out = self.work / f"scan{self.count}"
        scan(self.model, self.source, out, labels=self.labels, batch_size=BATCH, **options)
        shutil.rmtree(out)


def versus_floor(model: cl.Model, paths: list[Path], labels: list[int], scans: _Scans,
                 rounds: int) -> None:
    size = tuple(model.input_size)
    items = open_source([str(p) for p in paths]).items
    layers = [i for i in model.resolve("conv") if i.spatial and i.channels]
    pixels = model.to_pixels(np.stack([load for _, load in decoded(items, size, WORKERS, 64)]))

    def decode() -> None:  # the scan's own decoding threads, without the model
        for _ in decoded(items, size, WORKERS, 2 * BATCH):
            pass

    def forward() -> None:
        with model.capture(layers) as cap:
            for start in range(0, len(paths), BATCH):
                cap.run(model.prepare(pixels[start:start + BATCH]))

    def gradcam() -> None:
        for start in range(0, len(paths), BATCH):
            model.cam(pixels[start:start + BATCH], target=labels[start:start + BATCH])

    times = _rounds({
        "decode": decode, "forward": forward, "gradcam": gradcam,
        "scan": lambda: scans(cam=False), "scan_cam": lambda: scans(),
    }, rounds)
    median = {k: statistics.median(t[k] for t in times) for k in times[0]}
    layout = "channels-last" if model.channels_last else "NCHW"
    print(f"{len(paths)} JPEG files, {model.name} ({layout}), all {len(layers)} conv layers, "
          f"batch {BATCH}, {len(times)} rounds (median times: decoding {median['decode']:.2f} s, "
          f"forward + capture {median['forward']:.2f} s, batched Grad-CAM "
          f"{median['gradcam']:.2f} s, scan --no-cam {median['scan']:.2f} s, scan "
          f"{median['scan_cam']:.2f} s)")
    print("  scan --no-cam / (decoding alone + forward with capture alone): "
          + _median(times, lambda t: t["scan"] / (t["decode"] + t["forward"]))
          + "   bound <= 1.10")
    print("  scan with CAMs / (decoding alone + batched Grad-CAM alone):    "
          + _median(times, lambda t: t["scan_cam"] / (t["decode"] + t["gradcam"]))
          + "   bound <= 1.10")
    if model.device.type == "cuda":
        print("  scan --no-cam / max(decoding alone, forward alone) (GPU):      "
              + _median(times, lambda t: t["scan"] / max(t["decode"], t["forward"]))
              + "   bound <= 1.10")


def versus_ray(scans: _Scans, rounds: int) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        scans(engine="ray", cam=False)  # warm: Ray Data's first pipeline starts its workers
        times = _rounds({"local": lambda: scans(cam=False),
                         "ray": lambda: scans(engine="ray", cam=False)}, rounds)
    finally:
        ray.shutdown()
    print("  ray engine speed / local engine speed (2 CPUs, actor start included): "
          + _median(times, lambda t: t["local"] / t["ray"]) + "   bound >= 0.7")


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the (large) forking parent
_RSS_CHILD = """
import re, sys
from convlens.scan import scan
from convlens.scan.demo import digits_model
root, out = sys.argv[1], sys.argv[2]
scan(digits_model(), root, out, cam=False, top_k=9)
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)))
"""


def _peak_rss(root: Path, count: int, work: Path) -> float:
    """Peak RSS (MB) of a process that scans ``count`` digits PNGs (hard links, repeated)."""
    folder = work / f"digits{count}"
    source = sorted(root.rglob("*.png"))
    for i in range(count):
        target = folder / source[i % len(source)].parent.name / f"{i:05d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            os.link(source[i % len(source)], target)
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(folder), str(work / f"rss{count}")],
        capture_output=True, text=True, check=True,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def peak_rss(work: Path, small: int, large: int) -> None:
    from convlens.scan.demo import write_digits

    digits = write_digits(work / "digits")
    low, high = _peak_rss(digits, small, work), _peak_rss(digits, large, work)
    bound = "   bound <= 150 MB" if (small, large) == (1_000, 10_000) else ""
    print(f"  peak RSS, digits convnet: {large:,} images {high:.0f} MB - {small:,} images "
          f"{low:.0f} MB = {high - low:+.0f} MB{bound}")


MODELS = ("efficientnet_lite0", "resnet50")


def _model(name: str) -> cl.Model:
    if name == "resnet50":
        from .models import resnet50

        return cl.load_model(resnet50(), name="resnet50", input_size=(224, 224),
                             channels_last=False)
    return cl.load_model()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 64 images, 1 round, RSS 1,000 vs 2,000 images")
    parser.add_argument("--images", type=int, default=None, help="JPEG files (256)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds (3)")
    parser.add_argument("--ray-images", type=int, default=None,
                        help="JPEG files of the Ray vs local part (1,024)")
    parser.add_argument("--parts", default="floor,rss,ray", help="floor,rss,ray (all)")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="models of the floor part (efficientnet_lite0,resnet50)")
    parser.add_argument("--resnet-images", type=int, default=None,
                        help="JPEG files of the ResNet-50 floor part (128)")
    args = parser.parse_args([] if argv is None else argv)
    images = args.images or (64 if args.quick else 256)
    ray_images = args.ray_images or (64 if args.quick else 1024)
    rounds = args.rounds or (1 if args.quick else 3)
    parts = args.parts.split(",")
    # a ResNet-50 of random weights: some classes' Grad-CAMs are all zero (its warning)
    warnings.filterwarnings("ignore", message="Grad-CAM map is all zero")
    print(setting() + (" -- QUICK: a smoke run, not the bounds' figures" if args.quick else ""))
    model = cl.load_model()
    with tempfile.TemporaryDirectory(prefix="convlens-bench-scan-") as tmp:
        work = Path(tmp)
        paths, labels = _jpeg_folder(model, work / "jpeg", max(images, ray_images))
        names = model.class_names or []
        by_path = {str(p): names[label] for p, label in zip(paths, labels)}
        scan(model, paths[:BATCH], work / "warm", cam=False)  # warm the model and allocator
        for name in args.models.split(",") if "floor" in parts else []:
            if name not in MODELS:
                parser.error(f"--models: {name!r} is not one of {', '.join(MODELS)}")
            chosen = model if name == "efficientnet_lite0" else _model(name)
            count = images if name == "efficientnet_lite0" else (
                args.resnet_images or (32 if args.quick else 128))
            scans = _Scans(chosen, [str(p) for p in paths[:count]], by_path, work)
            scan(chosen, paths[:BATCH], work / f"warm-{name}", cam=False)
            versus_floor(chosen, paths[:count], labels[:count], scans, rounds)
        if "rss" in parts:
            peak_rss(work, 1_000, 2_000 if args.quick else 10_000)
        if "ray" in parts:
            print(f"{ray_images} JPEG files, --no-cam, {rounds} rounds")
            versus_ray(_Scans(model, [str(p) for p in paths[:ray_images]], by_path, work),
                       rounds)


if __name__ == "__main__":
    main(sys.argv[1:])
