"""Running a scan: check everything, then shard by shard (resumable), then the tables.

The data is cut into shards of ``shard_size`` consecutive images (by image id). Each shard is
decoded (a thread pool, running ahead of the model), run in batches through the per-batch function
(:class:`~.aggregate.Scanner`), merged in order, and committed as one file. The final tables are
the merge of every shard in shard order, so a resumed scan equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .aggregate import Partial, Scanner
from .receptive import Axis, boxes, receptive_fields
from .sources import BatchSource, FileSource, Item, ScanError, decode, open_source
from .store import (
    committed_shards,
    load_shard,
    save_shard,
    write_json,
    write_tables,
)

if TYPE_CHECKING:
    from ..models import LayerInfo, Model
    from .result import ScanResult

ENGINES = ("local", "ray")
RANKS = ("max", "mean")


@dataclass
class Plan:
    """Everything fixed before the first image is read."""

    model: Model
    source: FileSource | BatchSource
    out: Path
    layers: list[LayerInfo]
    scanner: Scanner
    shard_size: int
    batch_size: int
    workers: int
    params: dict[str, Any]
    manifest: dict[str, Any]
    #: each layer's receptive field (``receptive.receptive_fields``): the top-k's input boxes
    fields: dict[str, tuple[Axis, Axis]]


def model_fingerprint(model: Model) -> str:
    """A hash of the model's name, input size and every weight and buffer (any framework)."""
    digest = hashlib.sha256(f"{model.name}|{model.input_size}|{model.output}".encode())
    for key, data in model.weight_bytes():
        digest.update(key.encode())
        digest.update(data)
    return digest.hexdigest()[:16]


def _spatial_layers(model: Model, layers: Any) -> list[LayerInfo]:
    chosen = [i for i in model.resolve(layers) if i.spatial and i.channels]
    if not chosen:
        raise ScanError(
            f"none of the layers {layers!r} has a spatial (N, H, W, C) output; scan conv or "
            "pooling layers (layers='conv')"
        )
    return chosen


def _class_count(model: Model, source: FileSource | BatchSource) -> int:
    pixels = torch.zeros(1, *model.input_size, 3, device=model.device, dtype=model.dtype)
    with torch.no_grad():
        outputs = model.output_probabilities(model.forward(model.prepare(pixels))).shape[1]
    if isinstance(source, FileSource):
        labels = [item.label for item in source.items if item.label >= 0]
        names = len(source.class_names or [])
        return max(outputs, names, (max(labels) + 1) if labels else 0)
    return max(outputs, len(source.class_names or []))


def check_out(out: str | os.PathLike, resume: bool) -> Path:
    """The scan folder ``out``: new, empty, or (``resume``) a scan to continue; else ScanError."""
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ScanError(f"--out {folder} is a file; give a folder")
    if resume:
        return folder
    if (folder / "manifest.json").exists():
        raise ScanError(
            f"{folder} already holds a scan; pass --resume (resume=True) to continue it, "
            "or give another --out folder"
        )
    if folder.is_dir() and any(folder.iterdir()):
        raise ScanError(f"--out {folder} is not empty; give a new or empty folder")
    return folder


def plan_scan(
    model: Model, source: Any, out: str | os.PathLike | None = None, *,
    layers: Any = "conv", top_k: int = 9, rank: str = "max", labels: Any = None,
    cam: bool = True, resume: bool = False, batch_size: int = 32, shard_size: int = 1024,
    workers: int = 4, model_source: dict[str, Any] | None = None,
) -> Plan:
    """Check every argument (one-line errors, before any work) and fix the scan's plan.

    ``model_source``: how to load the model again (``path``, and ``preprocess`` /
    ``input_size`` as ``load_model`` takes them), recorded in the manifest so that the atlas can
    draw the model's filters (``convlens scan --model FILE`` records its file).
    """
    if not isinstance(top_k, int) or top_k < 1:
        raise ScanError(f"top_k must be a positive integer, not {top_k!r}")
    if rank not in RANKS:
        raise ScanError(f"rank must be 'max' or 'mean', not {rank!r}")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size),
                        ("workers", workers)):
        if not isinstance(value, int) or value < 1:
            raise ScanError(f"{name} must be a positive integer, not {value!r}")
    chosen = _spatial_layers(model, layers)
    opened = open_source(source, labels=labels, model_classes=model.class_names)
    folder = Path(tempfile.mkdtemp(prefix="convlens-scan-")) if out is None else check_out(
        out, resume
    )
    classes = _class_count(model, opened)
    from .. import __version__

    params = {
        "layers": [i.name for i in chosen], "top_k": top_k, "rank": rank, "cam": bool(cam),
        "shard_size": shard_size, "batch_size": batch_size, "classes": classes,
        "model": model_fingerprint(model), "data": opened.fingerprint(),
    }
    manifest_path = folder / "manifest.json"
    if manifest_path.exists():
        import json

        old = json.loads(manifest_path.read_text())
        if old.get("parameters") != params:
            changed = [k for k in params if old.get("parameters", {}).get(k) != params[k]]
            raise ScanError(
                f"cannot resume the scan in {folder}: {', '.join(changed)} changed since it "
                "started; scan into another --out folder"
            )
    if isinstance(opened, BatchSource) and opened.class_names is None and model.class_names:
        opened.class_names = list(model.class_names)
    manifest = {
        "convlens": __version__, "model": {
            "name": model.name, "fingerprint": params["model"],
            "input_size": list(model.input_size), "source": model_source,
        },
        "data": {"fingerprint": params["data"], "root": getattr(opened, "root", None),
                 "images": len(opened.items) if isinstance(opened, FileSource) else None,
                 "class_names": opened.class_names},
        "parameters": params, "status": "running",
    }
    scanner = Scanner(model, chosen, top_k=top_k, rank=rank, classes=classes, cam=cam)
    return Plan(model, opened, folder, chosen, scanner, shard_size, batch_size, workers, params,
                manifest, receptive_fields(model, chosen))


# -- decoding and batching ---------------------------------------------------------------------
def decoded(items: list[Item], size: tuple[int, int], workers: int, ahead: int
            ) -> Iterator[tuple[Item, np.ndarray | str]]:
    """(item, pixels or the reason it cannot be read), in order, decoded ``ahead`` in threads."""
    with ThreadPoolExecutor(workers, thread_name_prefix="convlens-decode") as pool:
        pending: deque = deque()
        queue = iter(items)
        for item in queue:
            pending.append((item, pool.submit(decode, item.path, size)))
            if len(pending) >= ahead:
                break
        while pending:
            item, future = pending.popleft()
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(decode, nxt.path, size)))
            yield item, future.result()


def run_shard(
    plan: Plan, chunks: Iterable[tuple[np.ndarray, Any, np.ndarray]],
    skipped: list[tuple[int, str, str]],
) -> Partial:
    """Merge the per-batch partials of one shard's batches (ids, pixels, labels), in order."""
    part = plan.scanner.empty()
    for ids, pixels, labels in chunks:
        batch = plan.scanner.batch(plan.model.to_pixels(pixels), ids, labels)
        part = part.merge(batch)
    part.skipped = list(skipped)
    return part


def _file_shards(plan: Plan, todo: list[int], advance: Callable[[int], None]
                 ) -> Iterator[tuple[int, Partial]]:
    source = plan.source
    assert isinstance(source, FileSource)
    size = plan.shard_size
    items = [it for s in todo for it in source.items[s * size:(s + 1) * size]]
    stream = decoded(items, tuple(plan.model.input_size), plan.workers, 2 * plan.batch_size)
    for s in todo:
        count = len(source.items[s * size:(s + 1) * size])
        skipped: list[tuple[int, str, str]] = []

        def chunks(count: int = count, skipped: list = skipped):
            ids, arrays, labels = [], [], []
            for _ in range(count):
                item, pixels = next(stream)
                advance(1)
                if isinstance(pixels, str):
                    skipped.append((item.id, item.path, pixels))
                    continue
                ids.append(item.id)
                arrays.append(pixels)
                labels.append(item.label)
                if len(ids) == plan.batch_size:
                    yield np.array(ids), np.stack(arrays), np.array(labels)
                    ids, arrays, labels = [], [], []
            if ids:
                yield np.array(ids), np.stack(arrays), np.array(labels)

        yield s, run_shard(plan, chunks(), skipped)


def _as_pixels(images: Any) -> torch.Tensor:
    """A batch from an iterable → (N, H, W, 3) float pixels (N, 3, H, W is transposed)."""
    if not isinstance(images, torch.Tensor):
        images = torch.as_tensor(np.asarray(images))
    if images.ndim == 4 and images.shape[-1] != 3 and images.shape[1] == 3:
        images = images.permute(0, 2, 3, 1)
    return images.float()


def _as_labels(labels: Any, n: int) -> np.ndarray:
    if labels is None:
        return np.full(n, -1, np.int64)
    array = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels)
    if array.ndim == 2 and array.shape[1] > 1:  # one-hot
        array = array.argmax(axis=1)
    return array.reshape(n).astype(np.int64)


def _batch_shards(plan: Plan, done: set[int], advance: Callable[[int], None]
                  ) -> Iterator[tuple[int, Partial]]:
    """Shards of an iterable source: ``shard_size`` consecutive images of the stream."""
    source = plan.source
    assert isinstance(source, BatchSource)
    size = plan.shard_size
    buffer: list[tuple[np.ndarray, torch.Tensor, np.ndarray]] = []
    next_id = 0
    shard = 0

    def flush(shard: int) -> Partial:
        chunks = []
        for ids, pixels, labels in buffer:
            for start in range(0, len(ids), plan.batch_size):
                stop = start + plan.batch_size
                chunks.append((ids[start:stop], pixels[start:stop], labels[start:stop]))
        return run_shard(plan, chunks, [])

    for batch in source.batches:
        images, labels = batch if isinstance(batch, (tuple, list)) else (batch, None)
        pixels = _as_pixels(images)
        n = pixels.shape[0]
        label_array = _as_labels(labels, n)
        start = 0
        while start < n:
            take = min(n - start, (shard + 1) * size - next_id)
            if shard not in done:
                ids = np.arange(next_id, next_id + take)
                buffer.append((ids, pixels[start:start + take], label_array[start:start + take]))
            next_id += take
            start += take
            advance(take)
            if next_id == (shard + 1) * size:
                if shard not in done:
                    yield shard, flush(shard)
                buffer = []
                shard += 1
    if buffer:
        yield shard, flush(shard)


class _InOrder:
    """Every shard's partial merged in shard order, as soon as its turn comes: this run's from
    memory, the ones committed by an earlier run read back from their files."""

    def __init__(self, out: Path, committed: set[int]):
        self.out = out
        self.committed = set(committed)
        self.waiting: dict[int, Partial] = {}
        self.merged: Partial | None = None
        self.merged_shards: set[int] = set()
        self.next = 0

    def add(self, index: int, part: Partial) -> None:
        self.waiting[index] = part
        self._advance()

    def _advance(self) -> None:
        while self.next in self.waiting or self.next in self.committed:
            self._take(self.next)
            self.next += 1

    def _take(self, index: int) -> None:
        part = self.waiting.pop(index, None)
        if part is None:
            part = load_shard(self.out, index)
        self.merged = part if self.merged is None else self.merged.merge(part)
        self.merged_shards.add(index)

    def result(self) -> Partial | None:
        self._advance()
        for index in sorted((self.committed | set(self.waiting)) - self.merged_shards):
            self._take(index)  # (after a gap in the shard numbers)
        return self.merged


# -- the whole scan ----------------------------------------------------------------------------
def execute(plan: Plan, *, engine: str = "local", ray_address: str | None = None,
            progress: bool = False) -> ScanResult:
    """Run a planned scan, resuming from the shards already committed; returns its result."""
    from .progress import scan_progress
    from .result import ScanResult

    if engine not in ENGINES:
        raise ScanError(f"engine must be 'local' or 'ray', not {engine!r}")
    started = time.time()
    plan.scanner.reset()
    for stale in [*plan.out.glob(".*.tmp"), *plan.out.glob("shards/.*.tmp")]:
        stale.unlink()  # half-written by a killed scan
    write_json(plan.out / "manifest.json", {**plan.manifest, "started": started})
    done = committed_shards(plan.out)
    source = plan.source
    if isinstance(source, FileSource):
        shards = max(1, -(-len(source.items) // plan.shard_size))
        todo = [s for s in range(shards) if s not in done]
        total = len(source.items)
        skip = total - sum(
            len(source.items[s * plan.shard_size:(s + 1) * plan.shard_size]) for s in todo
        )
    else:
        todo, total, skip = [], None, 0
    compute_started = time.perf_counter()
    with scan_progress(total, progress, done=skip) as advance:
        if isinstance(source, FileSource):
            if engine == "ray":
                from .ray_engine import ray_shards

                produced = ray_shards(plan, todo, advance, ray_address)
            else:
                produced = _file_shards(plan, todo, advance)
        else:
            if engine == "ray":
                raise ScanError("--engine ray reads files; scan an iterable with engine='local'")
            produced = _batch_shards(plan, done, advance)
        merging = _InOrder(plan.out, done)
        scanned = 0  # images run through the model by this run (not the committed shards')
        for index, part in produced:
            save_shard(plan.out, index, part)
            merging.add(index, part)
            scanned += len(part.image_id)
    compute = time.perf_counter() - compute_started
    merged = merging.result() or plan.scanner.empty()
    done = merging.merged_shards
    finish_started = time.perf_counter()
    paths = (
        {item.id: item.path for item in source.items} if isinstance(source, FileSource) else {}
    )
    positions = {
        name: np.stack([lp.top_y.ravel(), lp.top_x.ravel()], axis=1)
        for name, lp in merged.layers.items()
    }
    write_tables(
        plan.out, merged, paths=paths, class_names=source.class_names,
        boxes=boxes(plan.fields, positions, tuple(plan.model.input_size)),
        rank=plan.scanner.rank,
    )
    images = len(merged.image_id)
    timings = {
        "compute_s": round(compute, 3), "tables_s": round(time.perf_counter() - finish_started, 3),
        "total_s": round(time.time() - started, 3),
        "images_per_s": round(scanned / compute, 2) if compute > 0 and scanned else None,
    }
    write_json(plan.out / "manifest.json", {
        **plan.manifest, "status": "complete", "started": started, "timings": timings,
        "images": images, "skipped": len(merged.skipped), "shards": len(done),
        "engine": engine,
    })
    return ScanResult(plan.out)
