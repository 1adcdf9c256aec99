"""convlens against torch-cam and Captum: Grad-CAM family per image, one process per library.

What runs: Grad-CAM, Grad-CAM++, XGrad-CAM and LayerCAM (torch-cam has all four; Captum has
``LayerGradCam`` only) on ResNet-50 (random weights, torchvision's layout, built in
``benchmarks/models.py``) and the default model (EfficientNet-Lite0), at batch 1, 8 and 32.
Every library gets the same ``nn.Module`` (built in its process the same way, same seed, in the
memory format convlens chooses for it) and the same network input; every call includes the
library's own post-processing up to heatmaps at the image size in [0, 1] as NumPy arrays:

- convlens: ``model.cam(pixels, method=...)`` from 0..255 pixels (so its preprocessing too);
- torch-cam: forward with autograd, ``extractor(class_idx=top-1, scores)`` (its normalized maps
  at the layer's size), bilinear ``F.interpolate`` to the image size, min-max per map;
- Captum: ``LayerGradCam.attribute(x, target, relu_attributions=True)``,
  ``LayerAttribution.interpolate`` (bilinear), division by each map's max. Captum needs the
  target before its pass: the top-1 classes are given to it, worked out outside the timing.

How: each library runs in a worker process of its own (no shared allocator state, imports or
hooks) with the default C allocator, as a notebook has it, started afresh for each model: a
worker that ran ResNet-50 first keeps a heap shaped by it, which decides whether EfficientNet-
Lite0's calls page-fault afterwards (the notes below), whatever the library. The parent drives
the workers in turn, one call at a time, so only one computes at any moment; a round is one call
of each (library, method), the order of the libraries turning every round, and each worker's
turn starts with one untimed call (the caches come back from the other processes first). Per
cell: the median time per image, and convlens / best peer as the median over rounds of the paired
ratio (convlens's call / the call of the same round of the peer with the lowest median: a slow
spell of a shared machine hits both). Peak memory: the rise of the worker's peak RSS
(``VmHWM``, reset through ``/proc/self/clear_refs``) during one Grad-CAM call at batch 8.

Beside them, on EfficientNet-Lite0 at batch 1: Score-CAM (torch-cam), the capture of every conv
and pooling layer (Captum's ``LayerActivation``) and one step of Lucid-style filter visualization
(Lucent's ``render_vis``, in a fourth worker; Lucent imports torchvision's ``Normalize`` only,
which that worker gets as a stand-in, ``_without_torchvision``).

Run: ``python -m benchmarks.bench_peers`` (or ``make bench``; the peers come with
``pip install -e '.[bench]'``, Lucent with ``pip install --no-deps torch-lucent``: its declared
dependencies would pull torchvision and another torch). Without torch-cam or Captum the
comparison is skipped; without Lucent, its line.

Notes on batch cost (what issue 15 found; figures in README's Speed section):

- A forward pass allocates and frees the same big activation tensors on every call. glibc's
  malloc serves blocks above its mmap threshold (128 kB, rising with frees up to 32 MB) with a
  fresh ``mmap`` and unmaps them on free, so every call page-faults (and the kernel zeroes)
  its working set again. Minor faults per image of a no-grad forward (``ru_minflt``), default
  glibc, one process running ResNet-50 then EfficientNet-Lite0: ResNet-50 b1 ~1,500,
  b8 ~7,300, b32 ~24,000; EfficientNet-Lite0 b1 0, b8 ~2,400, b32 ~13,700.
  With freed memory kept (``runtime.tune_allocator``): 0 at b1 and b8. An autograd forward
  faults more (every activation is kept, ~10,000-18,000 per image at b8);
  ``torch.inference_mode`` faults like ``no_grad``: the grad mode is not the cause, the
  allocator is.
- The counts depend on the process's history: glibc raises its threshold to the size of the
  largest mapped block freed so far (at most 32 MB) and trims the heap's top above twice that,
  so the same call faults differently after other work. Fresh processes, EfficientNet-Lite0
  b8, Grad-CAM, faults per image: convlens 3,400-6,000, torch-cam 6,000-7,000 (its full
  autograd forward keeps every activation), a bare no-grad forward 9,200, an autograd forward
  12,200; after one 32 MB block was allocated and freed (the threshold at its ceiling)
  convlens faults 2,400-3,500: raising the threshold alone is not enough (below).
- Blocks above 32 MB (glibc's ceiling for the dynamic threshold) are always mapped afresh: at
  b32 ResNet-50's first activations are 100 MB each, and a Grad-CAM call faulted ~34,000 pages
  per image (b8: ~5,900); EfficientNet-Lite0's 96-channel 112x112 expansion is 36.75 MiB at b8
  (strace of one call: two such mmaps, 18.8k pages, and the heap's top moving 20 times over
  70 MB). Chunks under the ceiling (4 + 4 at b8) removed the mmaps, not the faults: strace
  then showed the heap growing by ~57 MB and handed back (``brk``) twice a call, 28k pages:
  glibc trims the heap's top once more than twice its threshold lies free, and the threshold
  had only risen to the largest block freed so far (18.4 MiB), so the trim line (37 MiB) was
  under a chunk's working set.
- What fixed it first, without a setting (``runtime.settle_heap`` and ``runtime.host_chunk``):
  free one block just under the ceiling once (glibc's threshold moves to 31 MiB, its trim line
  to 62 MiB: the state glibc reaches by itself after any such free), and run CPU batches in
  even chunks whose largest output is at most 12 MiB, so a chunk's working set (about five of
  its largest outputs) stays under the trim line. Fresh processes, default malloc, Grad-CAM per
  image: EfficientNet-Lite0 b8 in 4 x 2: 13.1-14.7 ms and 0 faults in three processes (4 + 4
  unsettled: 17.9-18.7 ms, 3,300-3,500 faults); b32 in 2s: 18.2 ms and 10 faults (5s: 20.6 ms,
  2,900); ResNet-50 b32 in 4s: 57.7-60.6 ms and 0-530 faults (8s unsettled: 68.1-73.9 ms,
  5,600-6,100). A settle without the smaller chunks still trimmed (4 + 4: 0, 2,064 and 3,577
  faults per image in three processes).
- Small chunks cost compute: ResNet-50's forward is ~10 % dearer per image at batch 3 than at 8
  (tuned no-grad 62-71 vs 55-59 ms), so its b8 Grad-CAM in 3 + 3 + 2 stayed 1.07-1.11x Captum,
  which runs 8 at once and faults ~5,000 pages per image. What the peers sometimes had by
  accident (a worker whose heap held something live above a large free area never trimmed it)
  is now done on purpose (``runtime.reserve_heap``): blocks allocated and freed under one live
  1 MiB block (the highest of them, shrunk in place) stay free heap below the top, where glibc's
  trim does not reach, and the passes' activations are served from them. ``host_chunk`` keeps
  each chunk's largest output under 30 MiB (no mmap) and reserves eight of them (at most
  512 MiB): ResNet-50 b8 runs whole, EfficientNet-Lite0 b8 as 4 + 4, b32 as 6s. Fresh processes,
  Grad-CAM per image: ResNet-50 b8 48.9-49.1 ms and 0 faults against 54.8-59.8 ms in chunks of 3
  (a reserve placed before the model was loaded was taken by its weights and did nothing;
  six outputs were enough for ResNet-50 b8, eight are reserved). The process keeps what the
  passes touched of the reserve (RSS +60 to +130 MB after the calls) until
  ``runtime.release_heap()``; glibc's settings are not touched.
- Why not a scoped ``mallopt`` around each call: glibc's ``mallopt`` cannot be read back, and
  any call to it (``M_MMAP_MAX``, ``M_TRIM_THRESHOLD``...) switches the dynamic mmap threshold
  off for the rest of the process (``mp_.no_dyn_threshold = 1``), so "restoring" leaves the
  process with another allocator than it had. Measured too: set on entry, restored and
  ``malloc_trim(0)`` on exit, a Grad-CAM call faulted *more* at b8 than the default (ResNet-50
  ~7,000 vs ~5,900 pages per image, EfficientNet-Lite0 ~7,000 vs ~4,700: the trim hands back
  what glibc's own dynamic threshold would have kept); restored without the trim, it faulted
  0, but only because the process then keeps its peak memory, which is tune_allocator's
  lasting effect by another name. Process-wide tuning therefore stays opt-in
  (``runtime.tune_allocator()``; the ``convlens`` command applies it for itself).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

METHODS = ("gradcam", "gradcam++", "xgradcam", "layercam")
BATCHES = (1, 8, 32)
MODELS = ("resnet50", "efficientnet_lite0")
PEERS = {"torchcam": "torchcam", "captum": "captum"}  # library -> module to look for
#: rounds per batch size (a batch of 32 of ResNet-50 takes seconds a call)
ROUNDS = {1: 11, 8: 5, 32: 3}
#: the layer every library explains: the one convlens picks by default, by module name
PEER_LAYER = {"resnet50": "layer4", "efficientnet_lite0": "_swish"}  # _swish's 2nd call: head
#: the filter-visualization step against Lucent: its layer and channel, image size, and the step
#: counts whose time difference gives one step (set-up and the final picture cancel out)
FILTER_LAYER, FILTER_CHANNEL, FILTER_SIZE, FILTER_STEPS = "_blocks.8._bn0", 0, 128, (4, 20)
ROOT = Path(__file__).resolve().parent.parent


# -- worker side -------------------------------------------------------------------------------
def _model(name: str, channels_last: bool | None = None):
    """ResNet-50 (its memory format measured by convlens, or as given) or the default model."""
    import convlens as cl

    from .models import resnet50

    if name == "resnet50":
        return cl.load_model(resnet50(), name="resnet50", channels_last=channels_last)
    return cl.load_model()


def _pixels(batch: int) -> torch.Tensor:
    import convlens as cl

    names = list(cl.SAMPLES)
    images = cl.load_images([names[i % len(names)] for i in range(batch)], size=(224, 224),
                            interpolation="bilinear")
    return torch.from_numpy(images)


def _to_unit(maps: torch.Tensor, shift: bool) -> np.ndarray:
    """(N, h, w) → (N, 224, 224) bilinear, then per map to [0, 1] (min-max or max)."""
    up = F.interpolate(maps[:, None], size=(224, 224), mode="bilinear", align_corners=False)[:, 0]
    if shift:
        up = up - up.amin(dim=(1, 2), keepdim=True)
    return (up / up.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).detach().numpy()


def _calls(library: str, model: Any, pixels: torch.Tensor) -> dict[str, Callable[[], object]]:
    """One call per method, the library's own way, from pixels (convlens) or network input."""
    if library == "convlens":
        return {m: (lambda m=m: model.cam(pixels, method=m)) for m in METHODS}
    net = model.network
    x = model.prepare(model.to_pixels(pixels))
    layer = PEER_LAYER[model.name]
    if library == "torchcam":
        from torchcam import methods as tc

        classes = {"gradcam": tc.GradCAM, "gradcam++": tc.GradCAMpp,
                   "xgradcam": tc.XGradCAM, "layercam": tc.LayerCAM}

        def torchcam_call(cls: type) -> np.ndarray:
            with cls(net, target_layer=layer) as extractor:
                scores = net(x)
                cams = extractor(scores.argmax(dim=1).tolist(), scores)
            return _to_unit(cams[0], shift=True)

        return {m: (lambda c=c: torchcam_call(c)) for m, c in classes.items()}
    from captum.attr import LayerAttribution, LayerGradCam

    with torch.no_grad():
        targets = net(x).argmax(dim=1).tolist()  # Captum takes the target before its pass
    explainer = LayerGradCam(net, dict(net.named_modules())[layer])

    def captum_call() -> np.ndarray:
        attr = explainer.attribute(x, target=targets, relu_attributions=True)
        up = LayerAttribution.interpolate(attr, (224, 224), interpolate_mode="bilinear")[:, 0]
        return (up / up.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)).detach().numpy()

    return {"gradcam": captum_call}


def _step_seconds(run: Callable[[int], object]) -> float:
    """Seconds of one optimization step: ``run(steps)`` at two step counts, the difference
    (after an untimed short run: a cold first call would make the difference negative)."""
    few, many = FILTER_STEPS
    run(few)
    start = time.perf_counter()
    run(few)
    middle = time.perf_counter()
    run(many)
    return ((time.perf_counter() - middle) - (middle - start)) / (many - few)


def _without_torchvision() -> None:
    """Lucent imports ``torchvision.transforms.Normalize`` (its only use of torchvision, for
    ImageNet normalization); convlens pins torch without torchvision, so this worker gets the
    same transform as a stand-in module: ``(x - mean) / std`` per channel, as torchvision's."""
    import types

    class Normalize(torch.nn.Module):
        def __init__(self, mean: Any, std: Any, inplace: bool = False):
            super().__init__()
            self.mean, self.std = torch.as_tensor(mean), torch.as_tensor(std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shape = (-1, 1, 1)
            return (x - self.mean.to(x).view(shape)) / self.std.to(x).view(shape)

    package = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.Normalize = Normalize  # type: ignore[attr-defined]
    package.transforms = transforms  # type: ignore[attr-defined]
    sys.modules.setdefault("torchvision", package)
    sys.modules.setdefault("torchvision.transforms", transforms)


def _extra_calls(library: str, model: Any, pixels: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The issue's other comparisons, where the library has them: Score-CAM (convlens,
    torch-cam), the capture of every conv and pooling layer (convlens, Captum) and one step of
    Lucid-style filter visualization (convlens's ``lucid`` recipe, Lucent's ``render_vis`` with
    its default Fourier image and transforms: one image of 128 px, upsampled to 224 by both).
    A call that returns a float reports its own seconds (the filter step)."""
    net = model.network
    x = model.prepare(model.to_pixels(pixels))
    if library == "convlens":
        from convlens.filters import visualize_filters

        def filters(steps: int) -> object:
            return visualize_filters(model, FILTER_LAYER, channels=[FILTER_CHANNEL],
                                     recipe="lucid", steps=steps, size=FILTER_SIZE)

        return {"scorecam": lambda: model.cam(pixels, method="scorecam"),
                "capture": lambda: model.activations(pixels),
                "filterstep": lambda: _step_seconds(filters)}
    if library == "lucent":
        _without_torchvision()
        from lucent.optvis import objectives, param, render

        objective = objectives.channel(FILTER_LAYER.replace(".", "_"), FILTER_CHANNEL)

        def lucent(steps: int) -> object:
            return render.render_vis(net, objective, lambda: param.image(FILTER_SIZE),
                                     thresholds=(steps,), show_image=False, progress=False)

        return {"filterstep": lambda: _step_seconds(lucent)}
    if library == "torchcam":
        from torchcam.methods import ScoreCAM

        def scorecam() -> np.ndarray:
            with ScoreCAM(net, target_layer=PEER_LAYER[model.name]) as extractor:
                with torch.inference_mode():
                    scores = net(x)
                cams = extractor(scores.argmax(dim=1).tolist())
            return _to_unit(cams[0], shift=True)

        return {"scorecam": scorecam}
    from captum.attr import LayerActivation

    modules = list({id(i.module): i.module for i in model.resolve(None)}.values())  # once each
    capture = LayerActivation(net, modules)
    return {"capture": lambda: capture.attribute(x)}


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    return 0


def _peak_rise(call: Callable[[], object]) -> float | None:
    """MB by which one call raises the process's peak RSS (None where it cannot be reset)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _status("VmRSS")
    call()
    return (_status("VmHWM") - before) / 2**20


def worker(library: str) -> None:
    """Answer JSON commands on stdin, one line each: setup, time, memory, quit.

    ``library`` is convlens, torchcam or captum; ``convlens+malloc`` is convlens in a process
    whose glibc malloc is tuned (``runtime.tune_allocator``; bench_clever compares the two).
    """
    if library == "convlens+malloc":
        from convlens.runtime import tune_allocator

        tune_allocator()
        library = "convlens"
    torch.manual_seed(0)
    models: dict[str, Any] = {}
    calls: dict[str, Callable[[], object]] = {}
    extras: dict[str, Callable[[], object]] = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        reply: dict[str, Any] = {}
        if cmd["cmd"] == "setup":
            if cmd["model"] not in models:
                models[cmd["model"]] = _model(cmd["model"], cmd.get("channels_last"))
            calls = _calls(library, models[cmd["model"]], _pixels(cmd["batch"]))
            for call in calls.values():  # warm-up: first-call costs, allocator state
                call()
            reply = {"methods": list(calls),
                     "channels_last": models[cmd["model"]].channels_last}
        elif cmd["cmd"] == "extras":
            if cmd["model"] not in models:  # a worker for the extras only (Lucent)
                models[cmd["model"]] = _model(cmd["model"])
            extras = _extra_calls(library, models[cmd["model"]], _pixels(cmd["batch"]))
            for call in extras.values():
                call()
            reply = {"methods": list(extras)}
        elif cmd["cmd"] == "time":
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            cpu, start = time.process_time(), time.perf_counter()
            result = {**calls, **extras}[cmd["method"]]()
            seconds = result if isinstance(result, float) else time.perf_counter() - start
            reply = {"seconds": seconds, "cpu": time.process_time() - cpu,
                     "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults}
        elif cmd["cmd"] == "memory":
            reply = {"mb": _peak_rise(calls["gradcam"])}
        elif cmd["cmd"] == "quit":
            return
        print(json.dumps(reply), flush=True)


# -- parent side -------------------------------------------------------------------------------
class Worker:
    def __init__(self, library: str):
        self.library = library
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.bench_peers", "--worker", library], cwd=ROOT,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )

    def ask(self, **cmd: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(cmd) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.library} worker stopped (exit {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.ask_quit()

    def ask_quit(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
        self.process.stdin.close()
        self.process.wait(timeout=60)


Samples = dict[tuple[str, str], list[dict[str, float]]]


def compare(model: str, batch: int, workers: list[Worker]) -> Samples:
    """Per (library, method), one sample per round: wall and CPU seconds and page faults.

    convlens (the first worker) is set up first: the peers get the memory format it chose.
    """
    ours = workers[0].ask(cmd="setup", model=model, batch=batch)
    methods = {workers[0].library: ours["methods"]}
    for w in workers[1:]:
        methods[w.library] = w.ask(cmd="setup", model=model, batch=batch,
                                   channels_last=ours["channels_last"])["methods"]
    samples: Samples = {(lib, m): [] for lib, ms in methods.items() for m in ms}
    for round_ in range(ROUNDS[batch]):
        shift = round_ % len(workers)
        for w in workers[shift:] + workers[:shift]:
            # an untimed call first: the caches, left to the previous worker's process, are
            # refilled before this one's timed calls (else its first method pays for it)
            w.ask(cmd="time", method=methods[w.library][0])
            for method in methods[w.library]:
                samples[(w.library, method)].append(w.ask(cmd="time", method=method))
    return samples


def per_image(samples: Samples, key: str, batch: int) -> dict[tuple[str, str], float]:
    """Median ``key`` (seconds, cpu, faults) per image of each (library, method)."""
    return {cell: statistics.median(s[key] for s in runs) / batch
            for cell, runs in samples.items()}


def paired_ratio(samples: Samples, method: str, key: str = "seconds") -> float:
    """Median over rounds of convlens's call / the best peer's call of the same round, the best
    peer being the one with the lowest median. (Not each round's faster peer: the minimum of two
    noisy draws is the luckier one, which on this shared machine put the Grad-CAM cells, the
    only ones with two peers, 5-10 % against convlens.)"""
    peers = {lib: runs for (lib, m), runs in samples.items() if m == method and lib != "convlens"}
    best = min(peers, key=lambda lib: statistics.median(s[key] for s in peers[lib]))
    return statistics.median(
        s[key] / b[key] for s, b in zip(samples[("convlens", method)], peers[best]))


def main() -> None:
    missing = [lib for lib, module in PEERS.items() if find_spec(module) is None]
    if missing:
        print(f"bench_peers: skipped, {' and '.join(missing)} not installed "
              "(pip install -e '.[bench]')")
        return
    from .timing import setting

    print(f"bench_peers: {setting(tune=False)}; one worker process per library, "
          "default glibc malloc in each")
    libraries = ["convlens", *PEERS]
    print("\nms per image (median over rounds); convlens / best peer: median of the rounds'"
          " paired ratios of wall time and of CPU time; page faults per image")
    print(f"{'model':<20}{'method':<11}{'batch':>6}" + "".join(f"{lib:>10}" for lib in libraries)
          + f"{'ratio':>8}{'cpu':>7}{'faults':>9}{'peer':>9}", flush=True)
    rows, memory = [], []
    others: Samples = {}
    for model in MODELS:  # fresh workers per model: no library inherits another model's heap
        workers = [Worker(lib) for lib in libraries]
        try:
            for batch in BATCHES:
                samples = compare(model, batch, workers)
                wall = per_image(samples, "seconds", batch)
                faults = per_image(samples, "faults", batch)
                for method in METHODS:
                    ms = {lib: 1000 * wall[(lib, method)] for lib in libraries
                          if (lib, method) in wall}
                    rows.append((model, method, batch, ms, paired_ratio(samples, method),
                                 paired_ratio(samples, method, "cpu"),
                                 faults[("convlens", method)], faults[("torchcam", method)]))
                    print_row(libraries, rows[-1])
                if batch == 8:
                    memory.append((model, {w.library: w.ask(cmd="memory")["mb"]
                                           for w in workers}))
            if model == "efficientnet_lite0":
                extra = [Worker("lucent")] if find_spec("lucent") is not None else []
                try:
                    others = compare_extras(model, workers + extra)
                finally:
                    for w in extra:
                        w.close()
        finally:
            for w in workers:
                w.close()
    summary(rows, memory)
    print_extras(others)


#: the extra comparisons' rounds (a torch-cam Score-CAM call takes seconds)
EXTRA_ROUNDS = 3


def compare_extras(model: str, workers: list[Worker]) -> Samples:
    """Score-CAM and the all-layer capture at batch 1, where each library has them."""
    methods = {w.library: w.ask(cmd="extras", model=model, batch=1)["methods"] for w in workers}
    samples: Samples = {(lib, m): [] for lib, ms in methods.items() for m in ms}
    for round_ in range(EXTRA_ROUNDS):
        shift = round_ % len(workers)
        for w in workers[shift:] + workers[:shift]:
            for method in methods[w.library]:
                samples[(w.library, method)].append(w.ask(cmd="time", method=method))
    return samples


def print_extras(samples: Samples) -> None:
    wall = per_image(samples, "seconds", 1)
    print("\nEfficientNet-Lite0, batch 1 (median of rounds): convlens / the peer that has it")
    for method, label in (("scorecam", "Score-CAM (1,280 channels)"),
                          ("capture", "capture of all conv + pool layers"),
                          ("filterstep", "Lucid filter step, one 128 px image")):
        peers = {lib: t for (lib, m), t in wall.items() if m == method and lib != "convlens"}
        if not peers:
            print(f"  {label:<36} no peer installed (Lucent: see the Makefile's bench target)")
            continue
        ours = wall[("convlens", method)]
        cells = "  ".join(f"{lib} {1000 * t:.1f} ms" for lib, t in peers.items())
        print(f"  {label:<36} convlens {1000 * ours:.1f} ms  {cells}  ratio "
              + "  ".join(f"{paired_ratio_vs(samples, method, lib):.2f}" for lib in peers))


def paired_ratio_vs(samples: Samples, method: str, library: str) -> float:
    """Median over rounds of convlens's call / ``library``'s call of the same round."""
    return statistics.median(a["seconds"] / b["seconds"] for a, b in zip(
        samples[("convlens", method)], samples[(library, method)]))


def print_row(libraries: list[str], row: tuple) -> None:
    model, method, batch, ms, ratio, cpu, ours, peer = row
    cells = "".join(f"{ms[lib]:>10.1f}" if lib in ms else f"{'-':>10}" for lib in libraries)
    print(f"{model:<20}{method:<11}{batch:>6}{cells}{ratio:>8.2f}{cpu:>7.2f}"
          f"{ours:>9.0f}{peer:>9.0f}", flush=True)


def summary(rows: list[tuple], memory: list[tuple]) -> None:
    worst = max(r[4] for r in rows)
    print(f"worst convlens / best peer: {worst:.2f} ({'ok' if worst <= 1.0 else 'MISSED'})")
    print("\nconvlens per image: batch 8 / batch 1, batch 32 / batch 1")
    ms = {(r[0], r[1], r[2]): r[3]["convlens"] for r in rows}
    for model, method, batch, *_ in rows:
        if batch == 1:
            b8, b32 = (ms[(model, method, b)] / ms[(model, method, 1)] for b in (8, 32))
            print(f"{model:<20}{method:<11}{b8:>6.2f}{b32:>7.2f}  "
                  f"{'ok' if b8 <= 1.0 else 'MISSED'}")
    print("\nPeak RSS rise of one Grad-CAM call, batch 8 (MB)")
    for model, mbs in memory:
        print(f"{model:<20}" + "  ".join(
            f"{lib} {'n/a' if mb is None else f'{max(mb, 0.0):+.0f}'}" for lib, mb in mbs.items()))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
    else:
        main()
