"""The Ray engine: the same per-batch function in a Ray Data pipeline.

read (rows of id, path, label, shard) → decode (Ray tasks) → ``map_batches`` with an actor pool
whose actors each hold the model and run :class:`~.aggregate.Scanner` → partial aggregates,
merged by the driver shard by shard (in image-id order) and committed as the local engine does.
One actor per node (per GPU with a GPU model) runs the model with the node's cores as torch
threads: a forward pass uses the cores better than several one-thread actors each holding a
copy of the model. Actors ask Ray for half a CPU, so the read and decode tasks never starve (on
2 cores, whole-CPU actors leave them no CPU and the pipeline hangs). When this process's allocator
is tuned (the ``convlens`` command), the actors' processes start with the same setting
(``runtime.allocator_env``).
"""

from __future__ import annotations

import io
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..runtime import allocator_env
from .aggregate import Partial, Scanner
from .sources import FileSource, ScanError, decode

if TYPE_CHECKING:
    from .engine import Plan


def _pack(part: Partial) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **part.to_arrays())
    return buffer.getvalue()


def _unpack(blob: bytes) -> Partial:
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return Partial.from_arrays({key: data[key] for key in data.files})


def _decode_rows(batch: dict[str, np.ndarray], size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Ray task: add the decoded pixels (zeros where unreadable) and the reasons ('' if read)."""
    pixels = np.zeros((len(batch["path"]), *size, 3), np.float32)
    errors = []
    for i, path in enumerate(batch["path"]):
        got = decode(str(path), size)
        if isinstance(got, str):
            errors.append(got)
        else:
            pixels[i] = got
            errors.append("")
    return {**batch, "pixels": pixels, "error": np.array(errors, dtype=object)}


class ScanActor:
    """Holds the model; turns a batch of decoded rows into packed Partials, one per run of
    consecutive image ids within a shard (a block is one such run; should Ray ever hand over
    two blocks at once, each part still covers consecutive rows, as the driver's merge needs)."""

    def __init__(self, scanner: Scanner, threads: int | None = None):
        import torch

        from .reduce import warm

        if threads:
            torch.set_num_threads(threads)
        self.scanner = scanner
        warm()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shards, counts, firsts, blobs = [], [], [], []
        order = np.lexsort((batch["id"], batch["shard"]))
        ids, shard_of = batch["id"][order], batch["shard"][order]
        cuts = np.nonzero((np.diff(ids) != 1) | (np.diff(shard_of) != 0))[0] + 1
        for rows in np.split(order, cuts):
            shard = batch["shard"][rows[0]]
            ok = [r for r in rows if not batch["error"][r]]
            if ok:
                model = self.scanner.model
                part = self.scanner.batch(
                    model.to_pixels(batch["pixels"][ok]), batch["id"][ok], batch["label"][ok]
                )
            else:
                part = self.scanner.empty()
            part.skipped = [
                (int(batch["id"][r]), str(batch["path"][r]), str(batch["error"][r]))
                for r in rows if batch["error"][r]
            ]
            shards.append(int(shard))
            counts.append(len(rows))
            firsts.append(int(batch["id"][rows].min()))
            blobs.append(_pack(part))
        return {
            "shard": np.array(shards), "count": np.array(counts), "first": np.array(firsts),
            "blob": np.array(blobs, dtype=object),
        }


class _InOrder:
    """A shard's partials merged in data order as they arrive: a part waits only for the ones
    before it, so the merge overlaps the pipeline, and the result does not depend on the order
    in which the actors finished. A part holds consecutive rows; ``next`` is the position (in
    the scan's rows) of the first row not merged yet."""

    def __init__(self, scanner: Scanner, start: int, position: dict[int, int]):
        self.merged = scanner.empty()
        self.next = start
        self.position = position  # image id → its row's position
        self.waiting: dict[int, tuple[int, bytes]] = {}  # position → (rows, blob)

    def add(self, first: int, count: int, blob: bytes) -> None:
        self.waiting[self.position[first]] = (count, blob)
        while self.next in self.waiting:
            count, blob = self.waiting.pop(self.next)
            self.merged = self.merged.merge(_unpack(blob))
            self.next += count

    def result(self) -> Partial:
        assert not self.waiting, "a shard's parts must cover its rows"
        return self.merged


def _connect(address: str | None) -> bool:
    """Join ``address`` or start a local Ray; True when this call started it."""
    try:
        import ray
    except ImportError:
        raise ScanError("--engine ray needs Ray: pip install 'convlens[ray]'") from None
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    except ConnectionError as err:
        raise ScanError(f"cannot join the Ray cluster at {address}: {err}") from None
    return True


def _check_picklable(scanner: Scanner) -> None:
    """The actors get the model by pickling: say so before any work if it cannot be."""
    from ray import cloudpickle

    try:
        cloudpickle.dumps(scanner)
    except Exception as err:
        raise ScanError(
            f"--engine ray sends the model to its actors by pickling, and this one cannot be "
            f"pickled ({type(err).__name__}); use --engine local, or a torch module loaded from "
            "Python (or a trusted pickled .pt file)"
        ) from None


def ray_shards(
    plan: Plan, todo: list[int], advance: Callable[[int], None], address: str | None
) -> Iterator[tuple[int, Partial]]:
    """Each shard of ``todo`` as a merged Partial, as soon as all its images are back."""
    import ray

    source = plan.source
    assert isinstance(source, FileSource)
    if not todo:
        return
    _check_picklable(plan.scanner)
    started = _connect(address)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # convlens shows its own bar
        context.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        size = plan.shard_size
        rows = [
            {"id": it.id, "path": it.path, "label": it.label, "shard": s}
            for s in todo for it in source.items[s * size:(s + 1) * size]
        ]
        expected = {s: len(source.items[s * size:(s + 1) * size]) for s in todo}
        gpu = plan.model.device.type == "cuda"
        if gpu:
            slots, threads = int(ray.cluster_resources().get("GPU", 1)) or 1, None
        else:  # one actor per node, its cores as torch threads
            cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]]
            cpus = [c for c in cpus if c > 0] or [1]
            slots, threads = len(cpus), min(cpus)
        blocks = -(-len(rows) // plan.batch_size)  # each block one batch, one decode task
        dataset = (  # and one actor call (Ray's rebundling cut 1,024 rows into 64 calls)
            ray.data.from_items(rows, override_num_blocks=blocks)
            .map_batches(_decode_rows, batch_size=None,
                         fn_kwargs={"size": tuple(plan.model.input_size)})
            .map_batches(
                ScanActor, fn_constructor_args=(plan.scanner, threads),
                batch_size=None, compute=ray.data.ActorPoolStrategy(size=slots),
                **({"num_gpus": 1} if gpu else {"num_cpus": 0.5}),
                **({"runtime_env": {"env_vars": env}} if (env := allocator_env()) else {}),
            )
        )
        position = {row["id"]: i for i, row in enumerate(rows)}
        starts = {}
        for i, row in enumerate(rows):
            starts.setdefault(row["shard"], i)
        merging = {s: _InOrder(plan.scanner, starts[s], position) for s in todo}
        seen: dict[int, int] = defaultdict(int)
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            for shard, count, first, blob in zip(
                batch["shard"], batch["count"], batch["first"], batch["blob"]
            ):
                shard = int(shard)
                merging[shard].add(int(first), int(count), blob)
                seen[shard] += int(count)
                advance(int(count))
                if seen[shard] == expected[shard]:
                    yield shard, merging.pop(shard).result()
    finally:
        if started:
            ray.shutdown()
